"""Training metrics: an append-only `metrics.jsonl` (truncated on resume), TensorBoard beside it, plots.

Only the main process logs: build a :class:`MetricsLog` with `enabled=False` on the others.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path

from ea_core.atomic import atomic_write, atomic_write_text


class MetricsLog:
    """Per-step metrics to `path` (JSON lines) and, when `tensorboard` is installed, to TensorBoard.

    On resume the file is cut back to `resume_step` (rows after it, and a line cut off by a kill, are
    dropped), so a resumed run's log reads like an uninterrupted one. TensorBoard event files go to
    `tensorboard_dir` (default: `tensorboard/` beside the JSONL); events after `resume_step` from an
    earlier attempt are superseded by the new ones (`purge_step`).
    """

    def __init__(self, path: str | os.PathLike, resume_step: int = 0, tensorboard: bool = True,
                 tensorboard_dir: str | os.PathLike | None = None, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self._f = self._tb = None
        self._t0 = time.time()
        if not enabled:
            return
        rows = read_metrics(self.path) if self.path.exists() else []
        kept = [r for r in rows if r["step"] <= resume_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._f = open(self.path, "a")  # noqa: SIM115 - closed in close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional dependency (ea-dit[train])
                SummaryWriter = None
            if SummaryWriter is not None:
                tb_dir = Path(tensorboard_dir) if tensorboard_dir else self.path.parent / "tensorboard"
                self._tb = SummaryWriter(str(tb_dir), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, **metrics: float) -> None:
        """Append one row `{"step", "time", **metrics}` (floats) and the same scalars to TensorBoard."""
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time() - self._t0, 3)}
        row.update({k: float(v) for k, v in metrics.items()})
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "time"):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a metrics.jsonl, stopping at a line cut off by a kill."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def plot_metrics(jsonl: str | os.PathLike, png: str | os.PathLike, keys: Iterable[str] | None = None) -> Path:
    """Plot metrics over steps from a metrics.jsonl into a PNG (one panel per metric); needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(jsonl)
    keys = list(keys or sorted({k for r in rows for k in r} - {"step", "time"}))
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 2.2 * max(len(keys), 1)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        pts = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        if pts:
            ax.plot(*zip(*pts), lw=1)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    try:
        return atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=100))
    finally:
        plt.close(fig)
