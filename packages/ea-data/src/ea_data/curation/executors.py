"""Executors: map the pipeline's per-file work over a local process pool or (with `ray_runner`) Ray.

An executor has `imap(fn, items)` (results in input order), `imap_unordered(fn, items)` (results in
completion order) and `close()`, and is a context manager. :class:`Executor` writes these once over
three backend operations (submit one item, wait for any, fetch a result) and keeps at most
`max_in_flight` items submitted, so huge input lists do not pile up in memory.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from ea_data.curation.work import init_worker

_END = object()


class Executor:
    """Bounded-in-flight `imap` / `imap_unordered` over a backend given by three methods.

    Subclasses set `max_in_flight` and implement :meth:`_submitter` (a function that submits one item
    and returns a handle, or None to run inline in this process), :meth:`_wait_any` and
    :meth:`_result`; :meth:`close` releases the backend.
    """

    max_in_flight: int = 1

    def _submitter(self, fn: Callable) -> Callable[[Any], Any] | None:
        raise NotImplementedError

    def _wait_any(self, pending: list) -> tuple[list, list]:
        """`(done, still_pending)` once at least one handle of `pending` has finished."""
        raise NotImplementedError

    def _result(self, handle: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _fill(self, pending: list | deque, submit: Callable, it: Iterator) -> None:
        while len(pending) < self.max_in_flight:
            item = next(it, _END)
            if item is _END:
                return
            pending.append(submit(item))

    def imap_unordered(self, fn: Callable, items: Iterable) -> Iterator:
        """Results in completion order."""
        submit = self._submitter(fn)
        if submit is None:
            yield from map(fn, items)
            return
        it, pending = iter(items), []
        self._fill(pending, submit, it)
        while pending:
            done, pending = self._wait_any(pending)
            self._fill(pending, submit, it)  # keep the backend busy while the caller handles results
            for handle in done:
                yield self._result(handle)

    def imap(self, fn: Callable, items: Iterable) -> Iterator:
        """Results in input order."""
        submit = self._submitter(fn)
        if submit is None:
            yield from map(fn, items)
            return
        it, queue = iter(items), deque()
        self._fill(queue, submit, it)
        while queue:
            result = self._result(queue.popleft())
            self._fill(queue, submit, it)
            yield result

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalExecutor(Executor):
    """Maps a function over items in-process (`workers == 1`) or in a process pool (`workers > 1`).

    At most `2 * workers` items are in flight.
    """

    def __init__(self, workers: int = 1, start_method: str = "forkserver"):
        self.workers = max(1, int(workers))
        self.max_in_flight = 2 * self.workers
        self.start_method = start_method
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = mp.get_context(self.start_method)
            if self.start_method == "forkserver":
                # The server imports the heavy modules once; each worker is then a cheap fork of it
                # (plain fork would copy this process's threads and locks; spawn re-imports per worker).
                ctx.set_forkserver_preload(["ea_data.curation.work", "ea_data.scoring", "cv2", "torch"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_worker)
        return self._pool

    def _submitter(self, fn: Callable) -> Callable[[Any], Future] | None:
        if self.workers == 1:
            return None
        pool = self._get_pool()
        return lambda item: pool.submit(fn, item)

    def _wait_any(self, pending: list[Future]) -> tuple[list[Future], list[Future]]:
        done, rest = wait(pending, return_when=FIRST_COMPLETED)
        return list(done), list(rest)

    def _result(self, handle: Future) -> Any:
        return handle.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@contextmanager
def own_executor(executor: Executor | None, workers: int) -> Iterator[Executor]:
    """Use the given executor, or a :class:`LocalExecutor` of `workers` closed on exit."""
    if executor is not None:
        yield executor
        return
    with LocalExecutor(workers) as ex:
        yield ex
