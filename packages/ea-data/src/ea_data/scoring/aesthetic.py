"""Aesthetic score: CLIP image embedding -> the improved-aesthetic-predictor MLP head.

The head (LAION's improved-aesthetic-predictor, trained on L2-normalised CLIP ViT-L/14 image
embeddings, scores roughly 1..10) is::

    Linear(768, 1024), Dropout(0.2), Linear(1024, 128), Dropout(0.2), Linear(128, 64), Dropout(0.1),
    Linear(64, 16), Linear(16, 1)

held in ``self.layers`` so its released state dict (``layers.0.weight`` ... ``layers.7.bias``) loads
as is. The input width is read from the file, so a head for another CLIP embedding size loads too.
open_clip is imported lazily (it takes seconds to import).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ea_core.files import load_state_dict

from .text import spread

DEFAULT_AESTHETIC_FRAMES = 4


class AestheticHead(nn.Module):
    """The improved-aesthetic-predictor MLP: `(B, embed_dim)` normalised embeddings -> `(B,)` scores."""

    def __init__(self, embed_dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(embed_dim, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.layers(emb).squeeze(-1)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> AestheticHead:
        """Load the released head (`.pth` via torch.load(weights_only=True), or `.safetensors`)."""
        sd = load_state_dict(path)
        if "layers.0.weight" not in sd:
            raise ValueError(f"{path}: not an aesthetic-predictor head (no 'layers.0.weight'; keys: "
                             f"{sorted(sd)[:6]}...)")
        head = cls(embed_dim=sd["layers.0.weight"].shape[1])
        try:
            head.load_state_dict(sd)
        except RuntimeError as e:
            raise ValueError(f"{path}: aesthetic head does not match the improved-aesthetic-predictor MLP ({e})") from e
        return head.eval()


class AestheticScorer:
    """open_clip image tower + aesthetic head. Call on `(N, H, W, 3)` uint8 RGB frames for the mean score.

    Args:
        clip_model: open_clip model name (e.g. "ViT-L-14") or a "local-dir:"/"hf-hub:" schema name.
        clip_weights: open_clip `pretrained` value: a local checkpoint path or a pretrained tag.
        head: path to the aesthetic head's state dict.
        max_frames: frames per clip that are embedded (evenly spread); None = all sampled frames.
    """

    def __init__(self, clip_model: str = "ViT-L-14", clip_weights: str | None = None,
                 head: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 max_frames: int | None = DEFAULT_AESTHETIC_FRAMES):
        import open_clip

        if head is None:
            raise ValueError("AestheticScorer needs the path of the aesthetic head weights")
        self.head = AestheticHead.from_file(head).to(device)
        model, _, preprocess = open_clip.create_model_and_transforms(clip_model, pretrained=clip_weights,
                                                                    device=device)
        self.model = model.eval()
        self.preprocess = preprocess  # PIL image -> (3, S, S) normalised tensor, as the model was trained
        self.device = torch.device(device)
        self.max_frames = max_frames
        out_dim = self.head.layers[0].in_features
        probe = getattr(getattr(model, "visual", None), "output_dim", out_dim)
        if probe != out_dim:
            raise ValueError(f"aesthetic head {head} takes {out_dim}-d embeddings but {clip_model} gives {probe}-d")

    @torch.inference_mode()
    def embed(self, frames: np.ndarray) -> torch.Tensor:
        """`(N, H, W, 3)` uint8 RGB -> `(N, D)` L2-normalised CLIP image embeddings (float32)."""
        from PIL import Image

        x = torch.stack([self.preprocess(Image.fromarray(f)) for f in frames]).to(self.device)
        emb = self.model.encode_image(x).float()
        return emb / emb.norm(dim=-1, keepdim=True)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> float | None:
        """Mean aesthetic score over the scored frames; None when there are no frames."""
        if len(frames) == 0:
            return None
        sel = frames[spread(len(frames), self.max_frames)]
        return float(self.head(self.embed(sel)).mean())
