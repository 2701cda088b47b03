r"""A differentiable reward for the demo world: a small video classifier of the object's colour and direction.

    uv run python -m ea_data.scoring.world_reward --data runs/demo/data/shards --out runs/demo/reward

trains :class:`WorldClassifier` on the demo world's clips (their captions, `ea_data.synthetic.demo_caption`,
are the labels) and writes a reward folder (`reward.json` + `classifier.safetensors`) that
:func:`ea_data.scoring.rewards.load_reward` loads as a :class:`WorldReward`:

    reward(videos, prompts) -> (B,)    videos: (B, 3, F, H, W) in [-1, 1]; prompts: B demo captions
    reward = (p(colour asked) + p(direction asked) + w * coverage) / (2 + w)  in [0, 1],  max_reward = 1

It scores whole clips (`scores_video = True`): direction is a property of the clip, not of a frame.
`coverage` (:func:`color_coverage`, weight `w` = `--coverage-weight`, 0 turns it off) asks for the object
itself: per frame, a soft count of the pixels that are the asked colour, up to `--coverage-pixels`. The
classifier alone pays a faint object (a few blurred pixels of a small star) nearly in full, since its
colour is still recognisable, and so gives reward backpropagation no reason to draw it clearly.

What keeps it from rewarding the wrong thing: besides the labelled clips, each training batch holds
- the same clips with the object removed (each pixel's median over the frames, the background only) with
  uniform targets for colour and direction, so an empty clip earns about 1/8 and 1/4 per head;
- the same clips frozen (the first frame repeated) with the colour kept and a uniform direction, so an
  object that does not move earns nothing for direction.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ea_core.atomic import atomic_directory
from ea_core.files import POSITIVE, check_fields, load_safetensors
from ea_data.batches import video_loader
from ea_data.clip_eval import COLOR_TOLERANCE
from ea_data.synthetic import COLOR_NAMES, DIRECTIONS, parse_demo_caption

__all__ = ["WorldClassifier", "WorldClassifierConfig", "WorldReward", "color_coverage", "labelled_clips",
           "load_world_reward", "random_batches", "save_world_reward", "train_world_classifier", "world_targets"]

WEIGHTS_NAME = "classifier.safetensors"
COVERAGE_PIXELS = 4.0  # pixels of the asked colour per frame that earn full coverage (a GT star shows 4-9)


@dataclass
class WorldClassifierConfig:
    """Sizes of :class:`WorldClassifier`; `colors` and `directions` name its output classes in order."""

    channels: tuple[int, ...] = (16, 32, 64)
    colors: tuple[str, ...] = tuple(COLOR_NAMES)
    directions: tuple[str, ...] = DIRECTIONS

    def __post_init__(self):
        self.channels, self.colors, self.directions = tuple(self.channels), tuple(self.colors), tuple(self.directions)
        check_fields(self, {"channels": POSITIVE})
        if len(self.channels) < 2:
            raise ValueError(f"WorldClassifierConfig.channels: need at least 2 stages, got {self.channels}")


class WorldClassifier(nn.Module):
    """Clip -> colour and direction logits. Space-time convolutions (3x3x3 after a per-frame stem, space
    halved per stage, time kept), global average pooling, two linear heads.

    forward: `(B, 3, F, H, W)` in [-1, 1], F >= 2 -> `((B, len(colors)), (B, len(directions)))`.
    """

    def __init__(self, config: WorldClassifierConfig | None = None):
        super().__init__()
        self.config = config or WorldClassifierConfig()
        c = self.config.channels
        layers: list[nn.Module] = [nn.Conv3d(3, c[0], (1, 3, 3), padding=(0, 1, 1)), nn.GELU()]
        for a, b in zip(c[:-1], c[1:]):
            layers += [nn.Conv3d(a, b, 3, stride=(1, 2, 2), padding=1), nn.GroupNorm(min(8, b), b), nn.GELU()]
        self.features = nn.Sequential(*layers)
        self.color_head = nn.Linear(c[-1], len(self.config.colors))
        self.direction_head = nn.Linear(c[-1], len(self.config.directions))

    def forward(self, videos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if videos.dim() != 5 or videos.shape[1] != 3 or videos.shape[2] < 2:
            raise ValueError(f"WorldClassifier: expected videos (B, 3, F, H, W) with F >= 2 frames, got shape "
                             f"{tuple(videos.shape)}")
        h = self.features(videos.to(self.color_head.weight.dtype)).mean(dim=(2, 3, 4))
        return self.color_head(h), self.direction_head(h)


def color_coverage(videos: torch.Tensor, colors: Sequence[str], pixels: float = COVERAGE_PIXELS,
                   tolerance: float = COLOR_TOLERANCE, softness: float = 10.0) -> torch.Tensor:
    """How much of each clip shows its asked colour: a differentiable version of the colour criterion of
    :func:`ea_data.clip_eval.color_masks` (a pixel is the colour when it lies within `tolerance` RGB units of
    it and nearer to it than to any other `COLOR_NAMES` colour).

    A pixel's membership is `sigmoid((tolerance - d) / softness) * softmax_k(-d_k / softness)[asked]` (d in
    0..255 RGB units); a frame's soft count of members, divided by `pixels` and capped at 1, is its
    coverage; the clip's is the mean over frames.

    videos `(B, 3, F, H, W)` in [-1, 1], colors B `COLOR_NAMES` keys -> `(B,)` in [0, 1].
    """
    if videos.dim() != 5 or videos.shape[1] != 3:
        raise ValueError(f"color_coverage: expected videos (B, 3, F, H, W), got shape {tuple(videos.shape)}")
    if len(colors) != videos.shape[0]:
        raise ValueError(f"color_coverage: {videos.shape[0]} videos but {len(colors)} colours")
    if pixels <= 0 or softness <= 0:
        raise ValueError(f"color_coverage: pixels ({pixels}) and softness ({softness}) must be > 0")
    names = list(COLOR_NAMES)
    unknown = sorted({c for c in colors if c not in COLOR_NAMES})
    if unknown:
        raise ValueError(f"color_coverage: unknown colours {unknown}; choose from {names}")
    palette = torch.tensor(list(COLOR_NAMES.values()), dtype=torch.float32, device=videos.device)  # (K, 3)
    rgb = (videos.float() + 1) * 127.5  # (B, 3, F, H, W)
    d = ((rgb[:, None] - palette[None, :, :, None, None, None]) ** 2).sum(2).add(1e-6).sqrt()  # (B, K, F, H, W)
    k = torch.tensor([names.index(c) for c in colors], device=videos.device)[:, None, None, None, None]
    d_asked = d.gather(1, k.expand(-1, 1, *d.shape[2:]))[:, 0]
    nearest = (-d / softness).softmax(1).gather(1, k.expand(-1, 1, *d.shape[2:]))[:, 0]
    member = torch.sigmoid((tolerance - d_asked) / softness) * nearest  # (B, F, H, W)
    return (member.sum((-2, -1)) / pixels).clamp(max=1).mean(-1)


def _check_coverage(weight: float, pixels: float) -> None:
    if weight < 0 or pixels <= 0:
        raise ValueError(f"WorldReward: coverage_weight ({weight}) must be >= 0 and coverage_pixels ({pixels}) > 0")


class WorldReward(nn.Module):
    """`(p(colour asked) + p(direction asked) + coverage_weight * coverage) / (2 + coverage_weight)` of a frozen
    :class:`WorldClassifier` and :func:`color_coverage` (`coverage_pixels`); max 1."""

    scores_video = True
    max_reward = 1.0

    def __init__(self, classifier: WorldClassifier, coverage_weight: float = 0.0,
                 coverage_pixels: float = COVERAGE_PIXELS):
        super().__init__()
        _check_coverage(coverage_weight, coverage_pixels)
        self.classifier = classifier.eval().requires_grad_(False)
        self.coverage_weight, self.coverage_pixels = float(coverage_weight), float(coverage_pixels)

    def forward(self, videos: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """videos `(B, 3, F, H, W)` in [-1, 1], prompts B demo captions -> `(B,)` rewards in [0, 1]."""
        if len(prompts) != videos.shape[0]:
            raise ValueError(f"WorldReward: {videos.shape[0]} videos but {len(prompts)} prompts")
        cfg = self.classifier.config
        asked = [parse_demo_caption(p) for p in prompts]
        ci = torch.tensor([cfg.colors.index(c) for c, _, _ in asked], device=videos.device)
        di = torch.tensor([cfg.directions.index(d) for _, _, d in asked], device=videos.device)
        color_logits, direction_logits = self.classifier(videos)
        p_color = color_logits.float().softmax(-1).gather(1, ci[:, None])[:, 0]
        p_direction = direction_logits.float().softmax(-1).gather(1, di[:, None])[:, 0]
        if not self.coverage_weight:
            return (p_color + p_direction) / 2
        coverage = color_coverage(videos, [c for c, _, _ in asked], self.coverage_pixels)
        return (p_color + p_direction + self.coverage_weight * coverage) / (2 + self.coverage_weight)


def world_targets(videos: torch.Tensor, prompts: Sequence[str], config: WorldClassifierConfig
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training inputs and soft targets from labelled clips: the clips, their object-free versions (uniform
    targets) and their frozen versions (colour kept, uniform direction).

    videos `(B, 3, F, H, W)`, prompts B demo captions -> inputs `(3B, 3, F, H, W)`, colour targets
    `(3B, len(colors))`, direction targets `(3B, len(directions))`.
    """
    f = videos.shape[2]
    asked = [parse_demo_caption(p) for p in prompts]
    color = F.one_hot(torch.tensor([config.colors.index(c) for c, _, _ in asked]), len(config.colors)).float()
    direction = F.one_hot(torch.tensor([config.directions.index(d) for _, _, d in asked]),
                          len(config.directions)).float()
    empty = videos.median(dim=2, keepdim=True).values.expand_as(videos)
    frozen = videos[:, :, :1].expand(-1, -1, f, -1, -1)
    uniform_c = torch.full_like(color, 1 / len(config.colors))
    uniform_d = torch.full_like(direction, 1 / len(config.directions))
    inputs = torch.cat([videos, empty, frozen])
    return inputs, torch.cat([color, uniform_c, color]), torch.cat([direction, uniform_d, uniform_d])


def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * logits.log_softmax(-1)).sum(-1).mean()


def train_world_classifier(batches: Iterable[tuple[torch.Tensor, Sequence[str]]], steps: int, lr: float = 2e-3,
                           config: WorldClassifierConfig | None = None, noise: float = 0.05, seed: int = 0,
                           log=print) -> WorldClassifier:
    """Train a :class:`WorldClassifier` for `steps` steps on `(videos (B, 3, F, H, W), demo captions)`
    batches (AdamW, cosine LR). Gaussian pixel noise of std `noise` is added to the inputs, so that a
    decoder's small errors do not change the verdict. Returns the classifier in eval mode."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    model = WorldClassifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    it = iter(batches)
    for step in range(1, steps + 1):
        videos, prompts = next(it)
        x, tc, td = world_targets(videos, prompts, model.config)
        x = x + noise * torch.randn_like(x)
        color_logits, direction_logits = model(x)
        loss = _soft_cross_entropy(color_logits, tc) + _soft_cross_entropy(direction_logits, td)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step % max(1, steps // 10) == 0 or step == steps):
            log(f"world reward classifier: step {step}/{steps} loss {loss.item():.4f}")
    return model.eval()


def save_world_reward(classifier: WorldClassifier, folder: str | os.PathLike, coverage_weight: float = 0.0,
                      coverage_pixels: float = COVERAGE_PIXELS) -> Path:
    """Write `folder/reward.json` ({"kind": "demo_world", ...}, with the :class:`WorldReward` coverage settings)
    and the weights, atomically (the folder is replaced whole)."""
    _check_coverage(coverage_weight, coverage_pixels)
    spec = {"kind": "demo_world", "weights": WEIGHTS_NAME, "config": asdict(classifier.config),
            "coverage_weight": coverage_weight, "coverage_pixels": coverage_pixels}
    with atomic_directory(folder) as tmp:
        save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, tmp / WEIGHTS_NAME)
        (tmp / "reward.json").write_text(json.dumps(spec, indent=1))
    return Path(folder)


def load_world_reward(folder: Path, spec: dict, device) -> WorldReward:
    """The `load_reward` loader of kind "demo_world" (a spec without coverage settings: the classifier alone)."""
    classifier = WorldClassifier(WorldClassifierConfig(**spec.get("config", {})))
    classifier.load_state_dict(load_safetensors(Path(folder) / spec.get("weights", WEIGHTS_NAME)))
    return WorldReward(classifier, spec.get("coverage_weight", 0.0), spec.get("coverage_pixels", COVERAGE_PIXELS)).to(device)


# ----------------------------------------------------------------------------- command line


def labelled_clips(loader, max_clips: int = 4096) -> tuple[torch.Tensor, list[str]]:
    """One pass over a demo-world loader: its clips whose captions are demo captions (static scenes and
    images are skipped), at most `max_clips`. Returns `(N, 3, F, H, W)` clips and their N captions."""
    clips, captions = [], []
    for batch in loader:
        for video, caption in zip(batch["pixel_values"], batch["caption"]):
            try:
                parse_demo_caption(caption)
            except ValueError:
                continue
            if video.shape[1] >= 2 and len(clips) < max_clips:
                clips.append(video)
                captions.append(caption)
    if len(clips) < 2:
        raise ValueError("the data holds fewer than 2 clips with demo captions ('a red circle moves left')")
    return torch.stack(clips), captions


def random_batches(clips: torch.Tensor, captions: Sequence[str], batch_size: int, seed: int = 0
                   ) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Endless batches drawn at random (without replacement within a batch) from clips held in memory."""
    g = torch.Generator().manual_seed(seed)
    n = len(captions)
    while True:
        pick = torch.randperm(n, generator=g)[:batch_size].tolist()
        yield clips[pick], [captions[i] for i in pick]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ea_data.scoring.world_reward", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="WebDataset shards of the demo world (ea-data run output)")
    p.add_argument("--out", required=True, help="reward folder to write (reward.json + classifier.safetensors)")
    p.add_argument("--size", type=int, default=16, help="clip size in pixels, as the generator makes (default 16)")
    p.add_argument("--frames", type=int, default=5, help="frames per clip (default 5)")
    p.add_argument("--frame-stride", type=int, default=4, help="source frames between clip frames (default 4)")
    p.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    p.add_argument("--max-clips", type=int, default=4096, help="clips read from --data, once (default 4096)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--coverage-weight", type=float, default=2.0,
                   help="weight of the colour-coverage term in the reward (see color_coverage; default 2, as the "
                        "demo; 0: the classifier alone)")
    p.add_argument("--coverage-pixels", type=float, default=COVERAGE_PIXELS,
                   help="pixels of the asked colour per frame that earn full coverage (default 4)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        _check_coverage(a.coverage_weight, a.coverage_pixels)
    except ValueError as e:
        print(f"error: --coverage-weight / --coverage-pixels: {e}", file=sys.stderr)
        return 2
    if not Path(a.data).exists():
        print(f"error: --data {a.data} does not exist", file=sys.stderr)
        return 2
    loader = video_loader(a.data, batch_size=a.batch_size, frames=a.frames, stride=a.frame_stride, size=a.size,
                          image_video_ratio=0, seed=a.seed, num_workers=0, clip_start="centre")
    clips, captions = labelled_clips(loader, a.max_clips)
    print(f"{len(captions)} labelled clips of shape {tuple(clips.shape[1:])} from {a.data}")
    model = train_world_classifier(random_batches(clips, captions, a.batch_size, a.seed), a.steps, lr=a.lr,
                                   seed=a.seed)
    print(f"wrote {save_world_reward(model, a.out, a.coverage_weight, a.coverage_pixels)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
