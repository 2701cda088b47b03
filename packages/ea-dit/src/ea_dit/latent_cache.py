"""A cache of VAE latents and T5 caption embeddings, computed once and reused across epochs and stages.

Encoding every batch with the frozen VAE and text encoder costs more than a small DiT's training step.
The cache encodes the data once (`passes` times over the loader, so random frame windows still vary)
and then hands out training batches of latents and embeddings:

    build_latent_cache(batches, encode_video, encode_text, "runs/x/latent_cache", passes=2)
    cache = LatentCache("runs/x/latent_cache")
    batch = cache.batch(16, generator=g)   # {"mean", "std", "embeds", "mask", "caption", "num_tokens"}
    latents = batch["mean"] + batch["std"] * torch.randn_like(batch["std"])  # a fresh posterior sample

`encode_video(pixel_values (B, 3, F, H, W)) -> (mean, std)` returns the VAE posterior's mean and standard
deviation (B, C, f, h, w), already multiplied by the latent scaling factor; `encode_text(list[str]) ->
(embeds (B, T, D), mask (B, T) bool)`. Neither the VAE nor the text encoder is imported here, so
`ea_dit` stays independent of `ea_vae` (`apps/train_dit --latent-cache DIR` builds and reads one).

Layout of the folder (written atomically: a temporary folder renamed when complete):
  latents.safetensors  "mean.<g>", "std.<g>" (N_g, C, f, h, w) for each shape group g; "caption_index.<g>"
                       (N_g,) int64 into the caption list; "embeds" (U, T, D), "mask" (U, T) bool: one
                       row per distinct caption (row 0 is "", the classifier-free-guidance caption).
  meta.json            {"captions": [...], "groups": [[C, f, h, w], ...], "passes": n, ...}
Embeddings are stored up to the longest caption's real tokens (T), not the encoder's padded length:
the DiT masks padding out of cross-attention, so the result is the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ea_core.atomic import atomic_directory

META_NAME = "meta.json"
TENSORS_NAME = "latents.safetensors"


@torch.no_grad()
def build_latent_cache(batches: Iterable[dict], encode_video: Callable, encode_text: Callable,
                       path: str | os.PathLike, passes: int = 1, extra_meta: dict | None = None,
                       progress: Callable[[int], None] | None = None) -> Path:
    """Encode `batches` (dicts with "pixel_values" (B, 3, F, H, W) and "caption" [B strings]) into a cache.

    `batches` is iterated `passes` times (a re-iterable such as a data loader; call `set_epoch` between
    passes yourself through a generator if the loader needs it). `progress(n)` is called after each batch
    with the number of clips so far. Returns `path`.
    """
    path = Path(path)
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    groups: dict[tuple[int, ...], dict[str, list]] = {}
    captions: dict[str, int] = {"": 0}
    n = 0
    for p in range(passes):
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(p)
        for batch in batches:
            video, caps = batch["pixel_values"], list(batch["caption"])
            if video.ndim != 5 or video.shape[0] != len(caps):
                raise ValueError(f"batch pixel_values must be (B, 3, F, H, W) with B captions, got "
                                 f"{tuple(video.shape)} and {len(caps)} captions")
            mean, std = encode_video(video)
            g = groups.setdefault(tuple(mean.shape[1:]), {"mean": [], "std": [], "caption_index": []})
            g["mean"].append(mean.float().cpu())
            g["std"].append(std.float().cpu())
            g["caption_index"].append(torch.tensor([captions.setdefault(c, len(captions)) for c in caps]))
            n += len(caps)
            if progress:
                progress(n)
    if n == 0:
        raise ValueError("build_latent_cache: the batches were empty (no clips to cache)")
    names = list(captions)
    embeds, mask = _encode_captions(encode_text, names)
    tensors = {"embeds": embeds, "mask": mask}
    for i, g in enumerate(groups.values()):
        for key, parts in g.items():
            tensors[f"{key}.{i}"] = torch.cat(parts).contiguous()
    meta = {"captions": names, "groups": [list(k) for k in groups], "clips": n, "passes": passes,
            **(extra_meta or {})}
    with atomic_directory(path) as tmp:
        save_file(tensors, tmp / TENSORS_NAME)
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1))
    return path


def _encode_captions(encode_text: Callable, captions: list[str], chunk: int = 256):
    embeds, masks = [], []
    for i in range(0, len(captions), chunk):
        e, m = encode_text(captions[i:i + chunk])
        embeds.append(e.float().cpu())
        masks.append(m.bool().cpu())
    embeds, mask = torch.cat(embeds), torch.cat(masks)
    length = max(int(mask.sum(1).max()), 1)
    return embeds[:, :length].contiguous(), mask[:, :length].contiguous()


class LatentCache:
    """Read a cache written by :func:`build_latent_cache` (weights-only safetensors + JSON)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / META_NAME).is_file() or not (self.path / TENSORS_NAME).is_file():
            raise FileNotFoundError(f"{self.path}: not a latent cache (needs {META_NAME} and {TENSORS_NAME})")
        self.meta = json.loads((self.path / META_NAME).read_text())
        t = load_file(self.path / TENSORS_NAME)
        self.captions: list[str] = self.meta["captions"]
        self.embeds, self.mask = t["embeds"], t["mask"]
        self.groups = [{k: t[f"{k}.{i}"] for k in ("mean", "std", "caption_index")}
                       for i in range(len(self.meta["groups"]))]
        self._caption_row = {c: i for i, c in enumerate(self.captions)}

    def __len__(self) -> int:
        return sum(len(g["mean"]) for g in self.groups)

    def text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached `(embeds (B, T, D), mask (B, T))` of captions that are in the cache ("" always is)."""
        missing = [c for c in captions if c not in self._caption_row]
        if missing:
            raise KeyError(f"{self.path}: captions not in the cache: {missing[:3]}")
        rows = torch.tensor([self._caption_row[c] for c in captions])
        return self.embeds[rows], self.mask[rows]

    def items(self, group: int, index: torch.Tensor) -> dict:
        """Clips `index` (1-D long) of shape group `group`: {"mean", "std", "embeds", "mask", "caption", "num_tokens"}."""
        g = self.groups[group]
        rows = g["caption_index"][index]
        mean = g["mean"][index]
        return {"mean": mean, "std": g["std"][index], "embeds": self.embeds[rows], "mask": self.mask[rows],
                "caption": [self.captions[r] for r in rows.tolist()], "num_tokens": mean[0, 0].numel()}

    def batch(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """A random batch from one shape group (groups picked in proportion to their size)."""
        sizes = torch.tensor([len(g["mean"]) for g in self.groups], dtype=torch.float64)
        group = int(torch.multinomial(sizes, 1, generator=generator))
        index = torch.randint(0, int(sizes[group]), (batch_size,), generator=generator)
        return self.items(group, index)
