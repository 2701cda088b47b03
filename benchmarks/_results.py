"""Record a benchmark's results as JSON under benchmarks/results/ with device and version info.

Every benchmark calls :func:`save_results` once, so results from a CPU and from a lent GPU can be
compared later: each file names the device, torch/triton versions and the git commit it measured.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path

from ea_core.atomic import atomic_write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_info() -> dict:
    """Describe the machine: CPU or GPU name, memory, torch/triton/python versions."""
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["device"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda_version"] = torch.version.cuda
    else:
        info["device"] = "cpu"
    return info


def git_commit() -> str | None:
    """The commit the benchmark measured (with `-dirty` when the tree has changes)."""
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def save_results(name: str, results: dict | list, config: dict | None = None,
                 out_dir: str | Path | None = None) -> Path:
    """Write `{name}-{device}.json` atomically and return its path.

    Args:
        name: benchmark name, e.g. "decode_memory".
        results: the measurements (JSON-serialisable).
        config: the settings the benchmark ran with.
        out_dir: folder for the file (default benchmarks/results/).
    """
    info = device_info()
    record = {
        "benchmark": name,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "device_info": info,
        "config": config or {},
        "results": results,
    }
    out = Path(out_dir) if out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    tag = "cpu" if info["device"] == "cpu" else info["device"].replace(" ", "-").lower()
    path = out / f"{name}-{tag}.json"
    return atomic_write_json(path, record, indent=2, default=str)
