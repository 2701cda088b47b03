"""Differentiable rewards for reward backpropagation: decoded frames -> scores, with gradients.

The interface is small: a reward is a callable (usually an `nn.Module`)

    reward(frames, prompts) -> (N,) float scores      frames: (N, 3, H, W) in [-1, 1], prompts: N strings

with an attribute `max_reward` (the loss of reward backpropagation is `|max_reward - reward|`).
Prompt-free rewards ignore `prompts`. A reward that scores whole clips says so with `scores_video = True`
and takes `videos (B, 3, F, H, W)` and B prompts instead. Built in:

- :class:`AestheticReward` - open_clip image tower + the improved-aesthetic-predictor MLP head of the
  data filter (:class:`ea_data.scoring.aesthetic.AestheticHead`), scores ~1..10, max 10.
- :class:`ClipPreferenceReward` - `scale * cos(image embedding, text embedding)` of an open_clip model:
  HPS v2 style (a CLIP fine-tuned on human preference pairs; scale 1, max 1) and PickScore style (scale
  = the model's learned logit scale, ~100; max = scale).
- :class:`ea_data.scoring.world_reward.WorldReward` (kind "demo_world") - a small video classifier of the
  demo world's colour and direction, trained on its clips, with an optional colour-coverage term; scores
  clips, max 1.

:func:`load_reward` builds one from a folder holding `reward.json`, e.g.

    {"kind": "aesthetic", "clip_model": "ViT-L-14", "clip_weights": "clip.safetensors", "head": "head.pth"}
    {"kind": "hpsv2", "clip_model": "ViT-H-14", "clip_weights": "HPS_v2.1_compressed.pt"}
    {"kind": "pickscore", "clip_model": "ViT-H-14", "clip_weights": "pickscore.safetensors"}

(`"model_config": "my_clip.json"` names an open_clip model config file in the folder instead of a
built-in model name). :func:`register_reward` adds one's own kind. Weights load with safetensors or
`torch.load(weights_only=True)` only; open_clip is imported on first use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .aesthetic import AestheticHead
from .motion import load_state_dict
from .world_reward import load_world_reward

REWARD_CONFIG = "reward.json"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

__all__ = ["AestheticReward", "ClipPreferenceReward", "load_reward", "register_reward", "clip_pixels",
           "REWARD_CONFIG"]


def clip_pixels(frames: torch.Tensor, image_size: int, mean: Sequence[float] = OPENAI_MEAN,
                std: Sequence[float] = OPENAI_STD) -> torch.Tensor:
    """Differentiable CLIP preprocessing: `(N, 3, H, W)` in [-1, 1] -> `(N, 3, S, S)` normalised.

    As open_clip's eval transform: resize the short side to S (bicubic, antialiased), centre crop,
    normalise with the CLIP mean/std. A frame already S x S passes through the resize unchanged.
    """
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames have shape {tuple(frames.shape)}; expected (N, 3, H, W) RGB in [-1, 1]")
    x = (frames.float() + 1) / 2
    h, w = x.shape[-2:]
    if min(h, w) != image_size:
        scale = image_size / min(h, w)
        size = (max(image_size, round(h * scale)), max(image_size, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    top, left = (x.shape[-2] - image_size) // 2, (x.shape[-1] - image_size) // 2
    x = x[..., top:top + image_size, left:left + image_size]
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _image_size(model: nn.Module) -> int:
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


def _normalisation(model: nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    return cfg.get("mean", OPENAI_MEAN), cfg.get("std", OPENAI_STD)


def _frozen(module: nn.Module) -> nn.Module:
    """A reward is a fixed function: eval mode, no parameter gradients (gradients still reach the frames)."""
    module.eval()
    module.requires_grad_(False)
    return module


class AestheticReward(nn.Module):
    """`frames (N, 3, H, W) in [-1, 1] -> (N,)` aesthetic scores: CLIP image embedding (L2-normalised) -> MLP head."""

    max_reward = 10.0

    def __init__(self, clip: nn.Module, head: AestheticHead):
        super().__init__()
        self.clip, self.head = _frozen(clip), _frozen(head)
        self.image_size = _image_size(clip)
        self.mean, self.std = _normalisation(clip)

    def forward(self, frames: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        emb = self.clip.encode_image(clip_pixels(frames, self.image_size, self.mean, self.std)).float()
        return self.head(emb / emb.norm(dim=-1, keepdim=True))


class ClipPreferenceReward(nn.Module):
    """`frames (N, 3, H, W), prompts (N) -> (N,)`: `scale * cos(image, text)` of a (preference-tuned) CLIP.

    Args:
        clip: an open_clip CLIP model.
        tokenizer: its open_clip tokenizer (`open_clip.get_tokenizer(name)`).
        scale: None = the model's learned logit scale (PickScore); 1.0 for HPS v2.
    """

    def __init__(self, clip: nn.Module, tokenizer: Callable, scale: float | None = None):
        super().__init__()
        self.clip, self.tokenizer = _frozen(clip), tokenizer
        self.scale = float(clip.logit_scale.detach().exp()) if scale is None else float(scale)
        self.max_reward = self.scale
        self.image_size = _image_size(clip)
        self.mean, self.std = _normalisation(clip)

    def forward(self, frames: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if prompts is None or len(prompts) != frames.shape[0]:
            raise ValueError(f"{type(self).__name__} needs one prompt per frame: got "
                             f"{None if prompts is None else len(prompts)} prompts for {frames.shape[0]} frames")
        img = self.clip.encode_image(clip_pixels(frames, self.image_size, self.mean, self.std)).float()
        tokens = self.tokenizer(list(prompts)).to(frames.device)
        txt = self.clip.encode_text(tokens).float()
        cos = (img / img.norm(dim=-1, keepdim=True) * (txt / txt.norm(dim=-1, keepdim=True))).sum(-1)
        return self.scale * cos


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def _clip_from_spec(folder: Path, spec: dict, device) -> tuple[nn.Module, Callable]:
    import open_clip

    name = spec.get("clip_model", "ViT-L-14")
    if "model_config" in spec:
        cfg_path = folder / spec["model_config"]
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{folder / REWARD_CONFIG}: model_config {cfg_path} does not exist")
        open_clip.add_model_config(cfg_path)
        name = cfg_path.stem
    model = open_clip.create_model(name, pretrained=None, device=device)
    if spec.get("clip_weights"):
        sd = load_state_dict(folder / spec["clip_weights"])
        try:
            model.load_state_dict(sd)
        except RuntimeError as err:
            raise ValueError(f"{folder / spec['clip_weights']}: weights do not match open_clip model {name!r} "
                             f"({str(err).splitlines()[0]})") from err
    return model, open_clip.get_tokenizer(name)


def _aesthetic(folder: Path, spec: dict, device) -> AestheticReward:
    if "head" not in spec:
        raise ValueError(f"{folder / REWARD_CONFIG}: an aesthetic reward needs \"head\" (the MLP head's weights)")
    clip, _ = _clip_from_spec(folder, spec, device)
    return AestheticReward(clip, AestheticHead.from_file(folder / spec["head"]).to(device))


def _preference(scale: float | None):
    def load(folder: Path, spec: dict, device) -> ClipPreferenceReward:
        clip, tokenizer = _clip_from_spec(folder, spec, device)
        return ClipPreferenceReward(clip, tokenizer, scale=spec.get("scale", scale))

    return load


_LOADERS: dict[str, Callable] = {"aesthetic": _aesthetic, "hpsv2": _preference(1.0), "pickscore": _preference(None),
                                 "demo_world": load_world_reward}


def register_reward(kind: str, loader: Callable) -> None:
    """Add a reward kind: `loader(folder: Path, spec: dict, device) -> reward` for `{"kind": kind, ...}`."""
    _LOADERS[kind] = loader


def load_reward(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Build the reward described by `path/reward.json` (see the module docstring)."""
    folder = Path(path)
    cfg = folder / REWARD_CONFIG
    if not cfg.is_file():
        raise FileNotFoundError(f"{folder}: no {REWARD_CONFIG} describing the reward (kind and weight files)")
    try:
        spec = json.loads(cfg.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg}: not valid JSON ({err})") from err
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"{cfg}: expected a JSON object with a \"kind\" ({', '.join(sorted(_LOADERS))})")
    if spec["kind"] not in _LOADERS:
        raise ValueError(f"{cfg}: reward kind {spec['kind']!r} is unknown; known: {', '.join(sorted(_LOADERS))} "
                         "(register_reward adds one)")
    reward = _LOADERS[spec["kind"]](folder, spec, device)
    if not hasattr(reward, "max_reward"):
        raise TypeError(f"{cfg}: the {spec['kind']!r} loader returned a reward without max_reward")
    return reward
