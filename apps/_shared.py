"""Glue shared by the apps: CLI parsing, run set-up, the data loader, sampling and the demo text encoder.

Checkpoints, metric logs and plots, and the multi-process machinery live in `ea_dit.training`.
Apps import this module after putting `apps/` on `sys.path` (`uv run apps/train_dit` runs
`apps/train_dit/__main__.py`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
from pathlib import Path

import torch

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


def start_run(cfg, may_change: frozenset[str] | set[str]):
    """Join torchrun's process group (when launched by it), seed, and check that `--out` is not the run
    folder of a different configuration. Writes nothing: the trainer writes `config.json` once resume
    has decided. Returns `(DistContext, out folder)`.
    """
    # deferred: ea_dit.training loads torch.distributed.checkpoint, which only the trainers need
    from ea_dit.training import check_run_config, init_distributed

    ctx = init_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    check_run_config(out, dataclasses.asdict(cfg), may_change)
    return ctx, out


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
                 image_video_ratio: float | None, seed: int, num_workers: int, size_multiple: int = 16,
                 bucket_by: str = "aspect_ratio", token_budget: int | None = None, rank: int = 0,
                 world_size: int = 1, clip_start: str = "random"):
    """The ea-data bucketed, resumable loader over `shards` for process `rank` of `world_size`: batches
    `{"pixel_values": (B, 3, F, H, W), "caption": [...], ...}`, every batch from one bucket (images F = 1
    in their own batches). `bucket_by="token_length"` scales batch sizes so a batch holds about
    `batch_size x token_budget` pixels, with base sizes up to `size`.

    Raises ValueError when there are fewer shards than processes x workers (some would get no data).
    """
    from ea_data import LoaderConfig, make_dataloader
    from ea_data.buckets import TOKEN_LENGTH_RESOLUTIONS
    from ea_data.loader import list_shards

    n_shards, slots = len(list_shards(shards)), world_size * max(1, num_workers)
    if n_shards < slots:
        raise ValueError(f"--data {shards} has {n_shards} shard(s) for {world_size} process(es) x "
                         f"{max(1, num_workers)} loader worker(s): each needs at least one shard; write more "
                         "shards (ea-data --shard-size) or use fewer processes / --num-workers")
    extra = {}
    if bucket_by == "token_length":
        base_sizes = {r for r in TOKEN_LENGTH_RESOLUTIONS if r < size} | {size}
        extra = {"bucket_by": "token_length", "resolutions": tuple(sorted(base_sizes))}
        if token_budget:
            extra["token_budget"] = token_budget
    config = LoaderConfig(resolution=size, num_frames=frames, frame_stride=stride, batch_size=batch_size,
                          image_video_ratio=image_video_ratio, seed=seed, num_workers=num_workers,
                          size_multiple=size_multiple, random_start=clip_start == "random", **extra)
    return make_dataloader(shards, config, rank=rank, world_size=world_size)


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
