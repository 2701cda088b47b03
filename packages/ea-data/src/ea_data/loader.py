"""Bucketed WebDataset loader: shards of clips and images -> single-bucket batches of `(B, 3, F, H, W)`.

Shard samples (written by `ea_data.shards` or any WebDataset writer) hold an `mp4` clip or a
`jpg`/`png` image plus a `json` with `{"caption", "type", "fps", "num_frames", "width", "height", ...}`.

Per epoch, on every rank and dataloader worker ("slot" `g = rank * num_workers + worker`):

1. **split**: the shard list, shuffled with `(seed, epoch)`, is dealt round-robin to the slots
   (`split="shard"`); or every slot reads every shard and keeps samples `i % num_slots == g`
   (`split="sample"`, for fewer shards than slots). Either way each sample goes to exactly one slot.
2. **shuffle** samples in a seeded buffer, **assign** each to a bucket from its json (no decoding),
   and **batch** per bucket (:class:`BucketBatcher`); image and video batches are interleaved at
   `image_video_ratio`. Leftover partial batches are emitted at the end (or, with `drop_last`,
   dropped and counted).
3. **decode** only the emitted batches: `F = 1 + 4k` frames at `frame_stride`, resized and
   centre-cropped to the bucket, as float32 in [-1, 1]. A sample that fails to decode is logged with
   its key and left out of its batch (counted in `stats["skipped"]`).

Everything before decoding is a deterministic function of `(seed, epoch, shards, slot)`, so
:class:`BucketDataLoader` can resume mid-epoch: it records, per worker, the index of the next batch
plan and whose turn is next, and a resumed worker replays its plans without decoding the ones
already consumed. Batches come out in the order of an uninterrupted epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import braceexpand
import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ea_core.files import NON_NEGATIVE, POSITIVE, check_fields
from ea_data.buckets import (
    DEFAULT_TOKEN_BUDGET,
    TOKEN_LENGTH_RESOLUTIONS,
    BucketKey,
    aspect_ratio_buckets,
    nearest_bucket,
    num_tokens,
    resolution_for,
    round_down_frames,
    token_batch_size,
    token_length_frames,
)
from ea_vae.media import decode_video_bytes, media_member, probe_image_bytes, probe_video_bytes, read_image
from ea_vae.video_io import VideoReadError

log = logging.getLogger(__name__)


class SampleError(ValueError):
    """A shard sample is malformed (missing payload, bad json, unknown type); names the sample key."""


@dataclass
class LoaderConfig:
    """Options of the bucketed loader. Sizes in pixels, `num_frames` after the stride.

    bucket_by="aspect_ratio": videos go to the aspect-ratio bucket at `resolution` with `num_frames`
    frames (clips too short for it get the largest `1 + 4k` they hold); batches of `batch_size`
    videos or `image_batch_size` images.
    bucket_by="token_length": each sample gets the largest base size in `resolutions` that does not
    upscale it, `token_length_frames(base, token_budget, num_frames)` frames, and a batch size scaled
    so a batch holds about `batch_size` x `token_budget` pixels (<= `max_batch_size`).
    """

    resolution: int = 512
    num_frames: int = 49
    frame_stride: int = 1
    batch_size: int = 2
    image_batch_size: int | None = None  # None: same as batch_size
    bucket_by: str = "aspect_ratio"  # or "token_length"
    resolutions: tuple[int, ...] = TOKEN_LENGTH_RESOLUTIONS
    token_budget: int = DEFAULT_TOKEN_BUDGET  # frames x height x width of one full-budget sample
    max_batch_size: int | None = 64
    size_multiple: int = 16  # bucket sides are multiples of this (VAE 8 x patch 2)
    patch_size: int = 2
    image_video_ratio: float | None = None  # image batches per video batch; None: order of filling
    max_pending_batches: int = 16  # ready batches held back for the ratio before emitting anyway
    shuffle: bool = True
    shuffle_buffer: int = 64  # samples (raw bytes) held for shuffling, per worker
    seed: int = 0
    drop_last: bool = False  # drop (and count) partial batches at the end of an epoch
    random_start: bool = True  # random clip start (seeded per sample and epoch); else centred
    kinds: tuple[str, ...] = ("video", "image")  # sample kinds read; the others are passed over (not errors)
    split: str = "shard"  # "shard" or "sample"
    num_workers: int = 2
    pin_memory: bool = False
    prefetch_factor: int | None = 2

    def __post_init__(self):
        check_fields(self, {**dict.fromkeys(("resolution", "frame_stride", "batch_size", "image_batch_size", "resolutions",
                                             "token_budget", "max_batch_size", "size_multiple", "patch_size",
                                             "max_pending_batches", "prefetch_factor"), POSITIVE),
                            **dict.fromkeys(("image_video_ratio", "shuffle_buffer", "num_workers"), NON_NEGATIVE)})
        if self.bucket_by not in ("aspect_ratio", "token_length"):
            raise ValueError(f"bucket_by must be 'aspect_ratio' or 'token_length', got {self.bucket_by!r}")
        self.kinds = tuple(self.kinds)
        if not self.kinds or set(self.kinds) - {"video", "image"}:
            raise ValueError(f"kinds must be a non-empty subset of ('video', 'image'), got {self.kinds}")
        if self.split not in ("shard", "sample"):
            raise ValueError(f"split must be 'shard' or 'sample', got {self.split!r}")
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise ValueError(f"num_frames={self.num_frames} is not 1 + 4k; the Slice VAE needs 1, 5, 9, ...")
        for name in ("resolution", "frame_stride", "batch_size", "size_multiple", "token_budget", "patch_size",
                     "max_pending_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_batch_size is not None and self.image_batch_size < 1:
            raise ValueError(f"image_batch_size must be >= 1, got {self.image_batch_size}")
        if self.image_video_ratio is not None and self.image_video_ratio < 0:
            raise ValueError(f"image_video_ratio must be >= 0, got {self.image_video_ratio}")
        if self.num_workers < 0 or self.shuffle_buffer < 0:
            raise ValueError("num_workers and shuffle_buffer must be >= 0")
        self.resolutions = tuple(int(r) for r in self.resolutions)
        if self.bucket_by == "token_length" and not self.resolutions:
            raise ValueError("bucket_by='token_length' needs at least one base size in resolutions")


# ----------------------------------------------------------------------------- shards and metadata


def list_shards(shards: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Shard paths from a directory (its `*.tar`), a brace pattern (`data-{000..009}.tar`) or a list."""
    if isinstance(shards, (str, os.PathLike)):
        p = Path(shards)
        if p.is_dir():
            paths = sorted(str(x) for x in p.glob("*.tar"))
            if not paths:
                raise FileNotFoundError(f"{p}: directory holds no *.tar shards")
            return paths
        paths = list(braceexpand.braceexpand(str(shards)))
    else:
        paths = [str(s) for s in shards]
    if not paths:
        raise ValueError("no shards given")
    for path in paths:
        if "://" not in path and not os.path.exists(path):
            raise FileNotFoundError(f"{path}: shard does not exist")
    return paths


def _payload(sample: dict) -> tuple[str, str, bytes]:
    """`(kind, ext, bytes)` of a shard sample; the json's "type" wins over the extension."""
    meta_type = sample["_meta"].get("type")
    video, image = media_member(sample, "video"), media_member(sample, "image")
    kind = meta_type or ("video" if video else "image" if image else None)
    ext = video if kind == "video" else image if kind == "image" else None
    if kind not in ("video", "image"):
        raise SampleError(f"type must be 'video' or 'image', got {kind!r}")
    if ext is None:
        raise SampleError(f"type is {kind!r} but the sample has no {kind} file (has {sorted(sample)})")
    return kind, ext, sample[ext]


def sample_info(sample: dict) -> dict:
    """Parse a raw WebDataset sample into `{"key", "url", "kind", "ext", "data", "meta", "width",
    "height", "num_frames", "caption"}`; size and frame count come from the json, else from headers."""
    key = sample.get("__key__", "?")
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise SampleError(f"json is not valid ({e})") from e
    if not isinstance(meta, dict):
        raise SampleError(f"json must be an object, got {type(meta).__name__}")
    sample = dict(sample, _meta=meta)
    kind, ext, data = _payload(sample)
    width, height, frames = meta.get("width"), meta.get("height"), meta.get("num_frames")
    if kind == "video" and (not width or not height or not frames):
        width, height, frames = probe_video_bytes(data)
    elif kind == "image":
        if not width or not height:
            width, height = probe_image_bytes(data)
        frames = 1
    caption = meta.get("caption")
    if caption is None and "txt" in sample:
        caption = sample["txt"].decode("utf-8", "replace")
    return {"key": key, "url": sample.get("__url__", ""), "kind": kind, "ext": ext, "data": data,
            "meta": meta, "width": int(width), "height": int(height), "num_frames": int(frames),
            "caption": caption or ""}


def assign_bucket(kind: str, height: int, width: int, num_frames: int, config: LoaderConfig) -> tuple[BucketKey, int]:
    """The bucket `(kind, h, w, F)` of a sample and that bucket's batch size.

    `num_frames` is the clip's frame count before the stride; a clip holding fewer strided frames than
    the bucket asks for gets the largest `1 + 4k` it holds (its own bucket).
    """
    if height <= 0 or width <= 0 or num_frames <= 0:
        raise SampleError(f"size {width}x{height} with {num_frames} frames is not a valid sample")
    if config.bucket_by == "token_length":
        base = resolution_for(height, width, config.resolutions)
        target = 1 if kind == "image" else token_length_frames(base, config.token_budget, config.num_frames)
    else:
        base = config.resolution
        target = 1 if kind == "image" else config.num_frames
    h, w = nearest_bucket(height, width, aspect_ratio_buckets(base, config.size_multiple))
    available = (num_frames - 1) // config.frame_stride + 1
    frames = min(target, round_down_frames(available))
    key = BucketKey(kind, h, w, frames)
    if config.bucket_by == "token_length":
        bs = token_batch_size(frames, h, w, config.batch_size, config.token_budget, config.max_batch_size)
    else:
        bs = config.batch_size if kind == "video" else (config.image_batch_size or config.batch_size)
    return key, bs


# ----------------------------------------------------------------------------- batching


@dataclass
class BatchPlan:
    """A batch before decoding: its bucket and the parsed samples (see :func:`sample_info`)."""

    key: BucketKey
    samples: list[dict]


@dataclass
class BucketBatcher:
    """Groups samples into single-bucket batch plans and orders image and video batches.

    A bucket is emitted as soon as it holds its batch size. With `image_video_ratio = r`, batch `n`
    (0-based) is an image batch when `floor(p (n + 1))` exceeds the image batches so far,
    `p = r / (1 + r)`; a kind with nothing ready is waited for until `max_pending` batches of the
    other kind are held back (then the other kind goes). At the end the partial buckets are emitted
    (sorted by key), or dropped and counted in `dropped` with `drop_last`.
    """

    image_video_ratio: float | None = None
    drop_last: bool = False
    max_pending: int = 16
    dropped: int = 0
    dropped_keys: list[str] = field(default_factory=list)

    def __call__(self, items: Iterable[tuple[dict, BucketKey, int]]) -> Iterator[BatchPlan]:
        """`items` are `(sample, bucket key, bucket batch size)`; yields :class:`BatchPlan` s."""
        buckets: dict[BucketKey, list[dict]] = {}
        ready: dict[str, deque[BatchPlan]] = {"image": deque(), "video": deque()}
        fifo: deque[BatchPlan] = deque()
        self._counts = Counter()
        for sample, key, bs in items:
            bucket = buckets.setdefault(key, [])
            bucket.append(sample)
            if len(bucket) >= bs:
                plan = BatchPlan(key, buckets.pop(key))
                (fifo if self.image_video_ratio is None else ready[key.kind]).append(plan)
                yield from self._drain(fifo, ready, final=False)
        for key in sorted(buckets):
            if self.drop_last:
                self.dropped += len(buckets[key])
                self.dropped_keys += [s["key"] for s in buckets[key]]
                continue
            (fifo if self.image_video_ratio is None else ready[key.kind]).append(BatchPlan(key, buckets[key]))
        yield from self._drain(fifo, ready, final=True)

    def _next_kind(self) -> str:
        p = Fraction(self.image_video_ratio).limit_denominator(10_000)
        p = p / (1 + p)
        n = self._counts["image"] + self._counts["video"]
        return "image" if math.floor(p * (n + 1)) > self._counts["image"] else "video"

    def _drain(self, fifo, ready, final: bool) -> Iterator[BatchPlan]:
        while fifo:
            yield fifo.popleft()
        while ready["image"] or ready["video"]:
            want = self._next_kind()
            other = "video" if want == "image" else "image"
            if ready[want]:
                kind = want
            elif final or len(ready[other]) >= self.max_pending:
                kind = other
            else:
                return
            self._counts[kind] += 1
            yield ready[kind].popleft()


def _shuffled(items: Iterable, buffer: int, rng: np.random.Generator) -> Iterator:
    """Seeded streaming shuffle through a buffer of `buffer` items."""
    buf: list = []
    for item in items:
        if len(buf) < buffer:
            buf.append(item)
            continue
        j = int(rng.integers(len(buf)))
        buf[j], item = item, buf[j]
        yield item
    for j in rng.permutation(len(buf)):
        yield buf[j]


# ----------------------------------------------------------------------------- decoding


def resize_center_crop(frames: np.ndarray, height: int, width: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """`(F, H, W, 3)` uint8 -> `(3, F, height, width)` float32 in [-1, 1], frames-first channels-last in memory.

    Scales (bilinear, antialiased) so the frame covers the target, then crops the centre. Resizing
    runs on uint8 in channels-last layout, torch's fast CPU path (several times faster than float).
    The result is a view of an `(F, height, width, 3)` tensor (`out` if given): the layout the VAE
    convolves, so it encodes the batch without converting it (`torch.channels_last_3d` once batched).
    """
    if not frames.flags.writeable:  # torch.from_numpy wants writable memory
        frames = frames.copy()
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (F, 3, H, W), channels-last
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - height) // 2, (nw - width) // 2
        x = x[..., top:top + height, left:left + width]
    x = x.permute(0, 2, 3, 1)  # (F, height, width, 3), a view
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32)
    return out.copy_(x).div_(127.5).sub_(1.0).permute(3, 0, 1, 2)


def clip_start(num_frames: int, frames: int, stride: int, key: str, seed: int, epoch: int,
               random_start: bool) -> int:
    """First frame of a `frames`-frame clip at `stride` inside `num_frames` (seeded by key and epoch)."""
    span = num_frames - ((frames - 1) * stride + 1)
    if span < 0:
        raise VideoReadError(f"{key}: {num_frames} frames cannot hold {frames} frames at stride {stride}")
    if not random_start:
        return span // 2
    rng = np.random.default_rng([seed, epoch, zlib.crc32(key.encode())])
    return int(rng.integers(span + 1))


# ----------------------------------------------------------------------------- dataset


def _dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        world_size = world_size if world_size is not None else (dist.get_world_size() if initialised else 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return rank, world_size


class BucketedVideoDataset(IterableDataset):
    """WebDataset shards -> single-bucket batches (dicts); see the module docstring.

    Each batch: `pixel_values` `(B, 3, F, H, W)` float32 in [-1, 1] (memory format `torch.channels_last_3d`,
    i.e. frames-first channels-last, what the VAE convolves: no conversion copy), `caption`, `key`, `meta` (lists of
    B), `type` ("video" / "image"), `bucket` (:class:`BucketKey`), `start_frame` `(B,)` int64,
    `frame_stride`, `num_tokens` (per sample), `skipped` (keys left out since the previous batch),
    `worker` and `plan_index` (for resuming). Use :func:`make_dataloader` to get a resumable
    DataLoader; iterating this dataset directly gives one worker's stream.
    """

    def __init__(self, shards, config: LoaderConfig | None = None, rank: int | None = None,
                 world_size: int | None = None, epoch: int = 0):
        self.shards = list_shards(shards)
        self.config = config or LoaderConfig()
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        self.epoch = epoch
        self.stats: Counter = Counter()
        self._skip_plans: list[int] | None = None  # per worker, set by BucketDataLoader to resume
        self._emit_end = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def slot_shards(self, slot: int, num_slots: int) -> list[str]:
        """The shards read by global worker `slot` this epoch (all of them with split="sample")."""
        order = list(self.shards)
        if self.config.shuffle:
            perm = np.random.default_rng([self.config.seed, self.epoch]).permutation(len(order))
            order = [order[i] for i in perm]
        return order if self.config.split == "sample" else order[slot::num_slots]

    def __iter__(self) -> Iterator[dict]:
        # Read worker identity and resume state now: the generator body runs later, after the
        # DataLoader may have restored these attributes.
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        skip = self._skip_plans[worker] if self._skip_plans else 0
        return self._iter(worker, num_workers, skip, self._emit_end, self.epoch)

    def _iter(self, worker: int, num_workers: int, skip: int, emit_end: bool, epoch: int) -> Iterator[dict]:
        cfg = self.config
        num_slots = self.world_size * num_workers
        slot = self.rank * num_workers + worker
        shards = self.slot_shards(slot, num_slots)
        if cfg.split == "shard" and len(self.shards) < num_slots and worker == 0 and self.rank == 0:
            log.warning("%d shards for %d ranks x workers: some workers get no data; use more shards or "
                        "split='sample'", len(self.shards), num_slots)
        skipped: list[str] = []

        def on_tar_error(exn: Exception) -> bool:
            log.warning("shard read error, skipping the rest of the entry: %s", exn)
            skipped.append(f"<tar error: {exn}>")
            self.stats["tar_errors"] += 1
            return True

        raw = wds.tarfile_samples(({"url": u} for u in shards), handler=on_tar_error)
        if cfg.split == "sample":
            raw = (s for i, s in enumerate(raw) if i % num_slots == slot)
        if cfg.shuffle and cfg.shuffle_buffer > 1:
            raw = _shuffled(raw, cfg.shuffle_buffer, np.random.default_rng([cfg.seed, epoch, slot, 1]))

        def bucketed():
            for s in raw:
                key = s.get("__key__", "?")
                try:
                    info = sample_info(s)
                    if info["kind"] not in cfg.kinds:  # e.g. videos in the image-only training stage
                        continue
                    bucket, bs = assign_bucket(info["kind"], info["height"], info["width"],
                                               info["num_frames"], cfg)
                except Exception as e:  # a malformed sample never stops the epoch
                    log.warning("skipping sample %s (%s): %s", key, s.get("__url__", ""), e)
                    skipped.append(key)
                    self.stats["skipped"] += 1
                    continue
                yield info, bucket, bs

        batcher = BucketBatcher(cfg.image_video_ratio, cfg.drop_last, cfg.max_pending_batches)
        for index, plan in enumerate(batcher(bucketed())):
            if index < skip:  # replaying a resumed epoch: already consumed, don't decode
                skipped.clear()
                continue
            batch = self._decode(plan, epoch, skipped)
            if batch is None:
                continue
            batch.update(worker=worker, plan_index=index, skipped=list(skipped))
            skipped.clear()
            self.stats["batches"] += 1
            self.stats["samples"] += len(batch["key"])
            yield batch
        if batcher.dropped:
            log.info("drop_last: dropped %d samples of partial batches (slot %d)", batcher.dropped, slot)
            self.stats["dropped"] += batcher.dropped
        if emit_end:
            yield {"__end__": True, "worker": worker, "skipped": list(skipped), "dropped": batcher.dropped}

    def _decode(self, plan: BatchPlan, epoch: int, skipped: list[str]) -> dict | None:
        cfg, key = self.config, plan.key
        # Each sample is resized straight into its row of the batch, frames-first channels-last.
        batch = torch.empty(len(plan.samples), key.frames, key.height, key.width, 3)
        starts, kept = [], []
        for s in plan.samples:
            name = f"{s['key']} ({s['url']})"
            try:
                if key.kind == "video":
                    start = clip_start(s["num_frames"], key.frames, cfg.frame_stride, s["key"], cfg.seed, epoch,
                                       cfg.random_start)
                    idx = [start + i * cfg.frame_stride for i in range(key.frames)]
                    frames = decode_video_bytes(s["data"], idx, name)
                else:
                    start, frames = 0, read_image(s["data"], name)[None]
                resize_center_crop(frames, key.height, key.width, out=batch[len(kept)])
            except Exception as e:  # corrupt payloads are logged and skipped, never fatal
                log.warning("skipping sample %s: %s", name, e)
                skipped.append(s["key"])
                self.stats["skipped"] += 1
                continue
            starts.append(start)
            kept.append(s)
        if not kept:
            return None
        if len(kept) < len(plan.samples):
            batch = batch[:len(kept)].clone()  # don't carry the skipped rows' memory along
        return {
            "pixel_values": batch.permute(0, 4, 1, 2, 3),  # (B, 3, F, H, W), torch.channels_last_3d
            "caption": [s["caption"] for s in kept],
            "key": [s["key"] for s in kept],
            "meta": [s["meta"] for s in kept],
            "type": key.kind,
            "bucket": key,
            "start_frame": torch.tensor(starts, dtype=torch.int64),
            "frame_stride": cfg.frame_stride,
            "num_tokens": num_tokens(key.frames, key.height, key.width, cfg.patch_size),
        }


# ----------------------------------------------------------------------------- resumable DataLoader


@dataclass
class _Progress:
    epoch: int
    next_plan: list[int]  # per worker: plan index after the last batch delivered
    cursor: int = 0  # worker whose batch comes next
    batches: int = 0  # batches delivered this epoch


class BucketDataLoader(DataLoader):
    """A DataLoader over a :class:`BucketedVideoDataset` that resumes mid-epoch.

    Batches come out round-robin over the workers' streams (a worker whose stream ends leaves the
    cycle), which is the order a plain DataLoader gives; the loader enforces it, so a resumed epoch
    continues it exactly. `state_dict()` holds the epoch, the batches consumed, and per worker the
    next batch plan; `stats` counts batches, samples, skipped (corrupt) and dropped samples.
    Call `set_epoch(e)` before each epoch (as with a DistributedSampler).
    """

    MAX_SKIPPED_KEYS = 10_000

    def __init__(self, dataset: BucketedVideoDataset, num_workers: int = 0, **kwargs: Any):
        if kwargs.pop("persistent_workers", False):
            raise ValueError("BucketDataLoader needs fresh workers each epoch (epoch and resume point are "
                             "sent at start); persistent_workers is not supported")
        kwargs.pop("batch_size", None)
        super().__init__(dataset, batch_size=None, num_workers=num_workers, **kwargs)
        self.stats: Counter = Counter()
        self.skipped_keys: list[str] = []
        self._progress = self._fresh(dataset.epoch)
        self._resume: _Progress | None = None

    @property
    def _num_streams(self) -> int:
        return max(1, self.num_workers)

    def _fresh(self, epoch: int) -> _Progress:
        return _Progress(epoch=epoch, next_plan=[0] * self._num_streams)

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` at its next iteration; keeps a loaded resume point of the same epoch."""
        if self._resume is not None and self._resume.epoch != epoch:
            self._resume = None
        self.dataset.set_epoch(epoch)
        self._progress = self._resume or self._fresh(epoch)

    def state_dict(self) -> dict:
        p = self._progress
        ds = self.dataset
        return {"epoch": p.epoch, "batches_consumed": p.batches, "next_plan": list(p.next_plan),
                "cursor": p.cursor, "num_workers": self._num_streams, "rank": ds.rank,
                "world_size": ds.world_size, "seed": ds.config.seed, "stats": dict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`; the next iteration yields the rest of that epoch."""
        ds = self.dataset
        mine = {"num_workers": self._num_streams, "rank": ds.rank, "world_size": ds.world_size,
                "seed": ds.config.seed}
        for name, value in mine.items():
            if state.get(name) != value:
                raise ValueError(f"cannot resume: state has {name}={state.get(name)}, this loader has {value}; "
                                 "resume with the same workers, ranks and seed")
        self._resume = _Progress(epoch=int(state["epoch"]), next_plan=list(state["next_plan"]),
                                 cursor=int(state["cursor"]), batches=int(state["batches_consumed"]))
        ds.set_epoch(self._resume.epoch)
        self.stats = Counter(state.get("stats", {}))
        self._progress = self._resume

    def __iter__(self) -> Iterator[dict]:
        ds: BucketedVideoDataset = self.dataset
        start = self._resume if self._resume is not None else self._fresh(ds.epoch)
        self._resume = None
        progress = _Progress(start.epoch, list(start.next_plan), start.cursor, start.batches)
        self._progress = progress
        ds.set_epoch(progress.epoch)
        ds._skip_plans, ds._emit_end = list(progress.next_plan), True
        try:
            source = super().__iter__()  # workers receive the dataset (with the resume point) here
        finally:
            ds._skip_plans, ds._emit_end = None, False
        return self._ordered(source, progress)

    def _ordered(self, source, progress: _Progress) -> Iterator[dict]:
        n = self._num_streams
        active = list(range(n))
        queues = [deque() for _ in range(n)]
        turn = progress.cursor if progress.cursor in active else 0
        while active:
            if not queues[turn]:
                try:
                    item = next(source)
                except StopIteration:
                    raise RuntimeError(f"dataloader worker {turn} stopped without finishing its stream") from None
                queues[item["worker"]].append(item)
                continue
            item = queues[turn].popleft()
            self.stats["skipped"] += len(item["skipped"])
            # keep the first keys for inspection; the count covers all of them
            self.skipped_keys += item["skipped"][: max(0, self.MAX_SKIPPED_KEYS - len(self.skipped_keys))]
            pos = active.index(turn)
            if item.get("__end__"):
                self.stats["dropped"] += item["dropped"]
                active.remove(turn)
                turn = active[pos % len(active)] if active else 0
                continue
            turn = active[(pos + 1) % len(active)]
            progress.next_plan[item["worker"]] = item["plan_index"] + 1
            progress.cursor = turn
            progress.batches += 1
            self.stats["batches"] += 1
            self.stats["samples"] += len(item["key"])
            yield item


def make_dataloader(shards, config: LoaderConfig | None = None, rank: int | None = None,
                    world_size: int | None = None, epoch: int = 0) -> BucketDataLoader:
    """A resumable DataLoader of single-bucket batches from WebDataset `shards` (see the module doc).

    `rank`/`world_size` default to torch.distributed's when it is initialised, else 0/1.
    """
    config = config or LoaderConfig()
    dataset = BucketedVideoDataset(shards, config, rank=rank, world_size=world_size, epoch=epoch)
    kwargs: dict[str, Any] = {"pin_memory": config.pin_memory}
    if config.num_workers > 0:
        kwargs["prefetch_factor"] = config.prefetch_factor
    return BucketDataLoader(dataset, num_workers=config.num_workers, **kwargs)
