"""Glue shared by the apps: resumable checkpoints, loss logs and plots, demo data and a demo text encoder.

Apps import it after putting `apps/` on `sys.path` (`uv run apps/train_dit` runs `apps/train_dit/__main__.py`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


def parse_config(cls, argv, prog: str, doc: str, helps: dict[str, str] | None = None,
                 choices: dict[str, tuple] | None = None):
    """Parse command-line flags into the dataclass `cls`: one `--field-name` flag per field.

    bool fields get `--x/--no-x`; `tuple[str, ...]` fields a repeatable flag; `choices` restricts values.
    """
    helps, choices = helps or {}, choices or {}
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        name = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, f"default: {f.default}")
        if f.type == "bool":
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default, help=text)
        elif f.type.startswith("tuple"):
            p.add_argument(name, action="append", default=[], help=text + " (repeatable)")
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            p.add_argument(name, type=kind, default=f.default, choices=choices.get(f.name), help=text)
    values = vars(p.parse_args(argv))
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def start_run(cfg) -> tuple[torch.device, Path]:
    """Seed, pick the device, create the output folder and record the config there."""
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    os.replace(tmp, out / "config.json")
    return pick_device(cfg.device), out


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:07d}"


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete `step-*` folder under `root` (complete = has state.json), or None."""
    root = Path(root)
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").exists())
    return done[-1] if done else None


def save_checkpoint(root: str | os.PathLike, step: int, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], state: dict, keep: int = 2) -> Path:
    """Write modules (safetensors), optimizer states and a JSON state atomically into `root/step-N`.

    The folder is assembled under a temporary name and renamed when complete, so a job killed while
    saving leaves the previous checkpoint intact. Only the newest `keep` checkpoints are kept.
    """
    root = Path(root)
    final = _step_dir(root, step)
    tmp = root / f".tmp-step-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(tensors, tmp / f"{name}.safetensors")
    torch.save({name: opt.state_dict() for name, opt in optimizers.items()}, tmp / "optimizers.pt")
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=1, default=str))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in root.glob("step-*") if (p / "state.json").exists())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | os.PathLike, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore what :func:`save_checkpoint` wrote (weights-only loading) and return its JSON state."""
    path = Path(path)
    for name, module in modules.items():
        module.load_state_dict(load_file(path / f"{name}.safetensors"))
    opt_states = torch.load(path / "optimizers.pt", map_location="cpu", weights_only=True)
    for name, opt in optimizers.items():
        opt.load_state_dict(opt_states[name])
    rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / "state.json").read_text())


def resume(root: str | os.PathLike, modules: dict[str, torch.nn.Module],
           optimizers: dict[str, torch.optim.Optimizer], loader) -> int:
    """Restore the newest checkpoint under `root` (modules, optimizers, RNG, data position), if any.

    Returns the step to continue from (0 when there is no checkpoint).
    """
    ck = latest_checkpoint(root)
    if ck is None:
        return 0
    state = load_checkpoint(ck, modules, optimizers)
    loader.load_state_dict(state["loader"])
    print(f"resumed from {ck} at step {state['step']}")
    return state["step"]


# --------------------------------------------------------------------------------------------------
# logs and plots
# --------------------------------------------------------------------------------------------------


class LossLog:
    """Append-only JSONL of per-step metrics (`metrics.jsonl`), truncated to `step` on resume."""

    def __init__(self, path: str | os.PathLike, resume_step: int = 0):
        self.path = Path(path)
        rows = read_metrics(self.path) if self.path.exists() else []
        kept = [r for r in rows if r["step"] <= resume_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
        self._f = open(self.path, "a")  # noqa: SIM115 - closed in close()
        self._t0 = time.time()

    def write(self, step: int, **metrics: float) -> None:
        row = {"step": step, "time": round(time.time() - self._t0, 3)}
        row.update({k: float(v) for k, v in metrics.items()})
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


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
    """Plot metrics over steps from a metrics.jsonl into a PNG (one panel per metric)."""
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
    png = Path(png)
    tmp = png.with_name(f".{png.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)
    return png


# --------------------------------------------------------------------------------------------------
# sample videos (generation itself: ea_dit.t2v.TextToVideoPipeline)
# --------------------------------------------------------------------------------------------------


def save_videos(videos: torch.Tensor, prompts, out: Path, fps: float) -> list[Path]:
    from ea_vae.video_io import tensor_to_frames, write_video

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (video, prompt) in enumerate(zip(videos, prompts)):
        stem = f"{i:02d}-" + (re.sub(r"[^a-zA-Z0-9]+", "_", prompt).strip("_")[:48] or "video")
        frames = tensor_to_frames(video)
        paths.append(write_video(out / f"{stem}.mp4", frames, fps))
        write_video(out / f"{stem}.gif", frames, fps)
    return paths


# --------------------------------------------------------------------------------------------------
# demo inputs
# --------------------------------------------------------------------------------------------------


def build_demo_text_encoder(path: str | os.PathLike, d_model: int = 64, seed: int = 0) -> Path:
    """Save a small random T5 encoder + byte-level tokenizer to `path` (no download needed).

    The built-in demo trains offline; real runs pass a T5 path or hub id (PixArt: t5-v1_1-xxl) instead.
    The folder is loaded through the same `T5TextEncoder.from_pretrained` path as a real model.
    """
    path = Path(path)
    if (path / "config.json").exists():
        return path
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=384, d_model=d_model, d_kv=16, d_ff=2 * d_model, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    T5EncoderModel(config).save_pretrained(tmp)
    ByT5Tokenizer().save_pretrained(tmp)
    os.replace(tmp, path)
    return path


def video_loader(shards: str | os.PathLike, batch_size: int, frames: int, stride: int, size: int,
                 image_video_ratio: float | None, seed: int, num_workers: int, size_multiple: int = 16):
    """The ea-data bucketed, resumable loader over `shards`: batches `{"pixel_values": (B, 3, F, H, W),
    "caption": [...], ...}`, every batch from one aspect-ratio bucket (images F = 1 in their own batches)."""
    from ea_data import LoaderConfig, make_dataloader

    config = LoaderConfig(resolution=size, num_frames=frames, frame_stride=stride, batch_size=batch_size,
                          image_video_ratio=image_video_ratio, seed=seed, num_workers=num_workers,
                          size_multiple=size_multiple)
    return make_dataloader(shards, config)


def endless_batches(loader):
    """Batches over epochs without end (each epoch reshuffled); fails clearly when the data is empty.

    A loader resumed at the very end of an epoch yields nothing once; two empty epochs in a row mean
    there is no usable data.
    """
    empty = 0
    while True:
        n = 0
        for batch in loader:
            n += 1
            yield batch
        empty = empty + 1 if n == 0 else 0
        if empty >= 2:
            raise RuntimeError("the data loader produced no batches: check --data (no shards, or every "
                               "sample unreadable / too short for --frames)")
        loader.set_epoch(loader.state_dict()["epoch"] + 1)


def pick_device(name: str | None) -> torch.device:
    """`auto` -> cuda when available, else cpu."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
