"""How a trainer draws its batches: the bucketed, resumable loader for one process of a job, checked
against the shard count, and an endless iterator over its epochs."""

from __future__ import annotations

import os

from ea_data.buckets import TOKEN_LENGTH_RESOLUTIONS
from ea_data.loader import BucketDataLoader, LoaderConfig, list_shards, make_dataloader

__all__ = ["endless_batches", "video_loader"]


def video_loader(shards: str | os.PathLike, batch_size: int, frames: int, stride: int, size: int,
                 image_video_ratio: float | None, seed: int, num_workers: int, size_multiple: int = 16,
                 bucket_by: str = "aspect_ratio", token_budget: int | None = None, rank: int = 0,
                 world_size: int = 1, clip_start: str = "random",
                 kinds: tuple[str, ...] = ("video", "image")) -> BucketDataLoader:
    """The bucketed, resumable loader over `shards` for process `rank` of `world_size`: batches
    `{"pixel_values": (B, 3, F, H, W), "caption": [...], ...}`, every batch from one bucket (images F = 1
    in their own batches). `bucket_by="token_length"` scales batch sizes so a batch holds about
    `batch_size x token_budget` pixels, with base sizes up to `size`. `clip_start`: "random" draws each
    clip's first frame, "centre" takes the middle of the sample. `kinds` limits the samples read to videos or
    images.

    Raises ValueError when there are fewer shards than processes x workers (some would get no data).
    """
    if clip_start not in ("random", "centre"):
        raise ValueError(f"clip_start must be 'random' or 'centre', got {clip_start!r}")
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
                          size_multiple=size_multiple, random_start=clip_start == "random", kinds=tuple(kinds),
                          **extra)
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
