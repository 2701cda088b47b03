"""Run the curation pipeline on a Ray cluster (the `ray` extra: `pip install 'ea-data[ray]'`).

    from ea_data.ray_runner import run
    summary = run("s3-mounted/raw", "curated/", PipelineConfig(), address="auto")

The per-file work (split + score) and the clip encoding of the shard stage run as Ray tasks; this
process keeps the work log, filters, writes the shards in order and writes the same manifest as the
local runner (:func:`ea_data.curation.run`), so the two are interchangeable and a run started with one
can be resumed with the other. Scorers are built once per Ray worker process and reused by every
task it runs. Input and output folders must be visible to all nodes (a shared file system).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ea_data.curation import PipelineConfig
from ea_data.curation import run as run_pipeline
from ea_data.curation.executors import Executor
from ea_data.curation.work import init_worker


def _ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the Ray runner needs ray: pip install 'ea-data[ray]'") from e
    return ray


def _call(fn: Callable, item: Any) -> Any:
    init_worker()  # once per worker process: single-threaded libraries, quiet scorer logs
    return fn(item)


class RayExecutor(Executor):
    """The pipeline's executor interface (`imap`, `imap_unordered`, `close`) over Ray tasks.

    Connects to `address` (None: the cluster in RAY_ADDRESS, else a new local Ray; pass
    `ray.init` options such as `num_cpus` in `init_kwargs`). A Ray already initialised in this process
    is used as is and left running on close. At most `max_in_flight` tasks are pending (default: twice
    the cluster's CPUs).
    """

    def __init__(self, address: str | None = None, max_in_flight: int | None = None,
                 num_cpus_per_task: float = 1.0, **init_kwargs: Any):
        ray = _ray()
        self._owns = not ray.is_initialized()
        if self._owns:
            init_kwargs.setdefault("include_dashboard", False)
            init_kwargs.setdefault("log_to_driver", False)
            ray.init(address=address or os.environ.get("RAY_ADDRESS"), **init_kwargs)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.max_in_flight = max_in_flight or max(2, 2 * cpus)
        self._remote = ray.remote(num_cpus=num_cpus_per_task)(_call)

    def _submitter(self, fn: Callable) -> Callable[[Any], Any]:
        fn_ref = _ray().put(fn)
        return lambda item: self._remote.remote(fn_ref, item)

    def _wait_any(self, pending: list) -> tuple[list, list]:
        return _ray().wait(pending, num_returns=1)

    def _result(self, handle: Any) -> Any:
        return _ray().get(handle)

    def close(self) -> None:
        if self._owns:
            _ray().shutdown()
            self._owns = False


def run(input_dir: str | os.PathLike, output_dir: str | os.PathLike, config: PipelineConfig | None = None,
        address: str | None = None, **init_kwargs: Any) -> dict:
    """:func:`ea_data.curation.run` with the per-file work spread over a Ray cluster; same outputs."""
    with RayExecutor(address, **init_kwargs) as ex:
        return run_pipeline(input_dir, output_dir, config, executor=ex)
