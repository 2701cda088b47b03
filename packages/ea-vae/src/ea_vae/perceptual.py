"""LPIPS perceptual distance (Zhang et al. 2018) on VGG16 features, built in plain PyTorch.

The trunk mirrors torchvision's ``vgg16().features`` layer for layer (same indices, so its state-dict
keys load directly); five learned 1x1 "linear heads" weight the per-channel squared differences of the
unit-normalised features at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3.

Weights never come from the network: pass local files to :meth:`LPIPS.from_pretrained` /
:func:`load_lpips_weights`. Accepted layouts (keys are converted on load):

- this module's own (``features.N.weight``, ``lins.K.weight``), e.g. written by :meth:`LPIPS.save`;
- torchvision's VGG16 checkpoint (``features.N.*``; the classifier is ignored);
- the ``lpips`` package / taming-transformers ``vgg.pth`` (``lin{K}.model.1.weight``, and
  ``net.slice{S}.N.*`` for the trunk when present).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ea_core.atomic import atomic_write
from ea_core.files import load_state_dict

# VGG16 configuration "D": channels of each conv, "M" = 2x2 max pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in `features` after which LPIPS taps the activations (relu1_2 .. relu5_3) and their widths.
_TAPS = (3, 8, 15, 22, 29)
_TAP_CHANNELS = (64, 128, 256, 512, 512)


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU()]
            channels = v
    return nn.Sequential(*layers)


def normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale each feature vector ``x[n, :, h, w]`` to unit L2 norm over channels. ``(N, C, H, W)``."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """Learned perceptual distance between images in [-1, 1].

    ``forward(x, y)`` takes ``(N, 3, H, W)`` tensors and returns ``(N, 1, 1, 1)`` distances (0 for identical
    images, symmetric in x and y). The module is frozen (no parameter requires grad) and kept in eval mode,
    but gradients flow to the inputs, so it serves as a training loss.
    """

    def __init__(self):
        super().__init__()
        # ImageNet statistics expressed for [-1, 1] inputs, as in the lpips package's ScalingLayer.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.features = _vgg16_features()[: _TAPS[-1] + 1]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in _TAP_CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        # Always eval: a pretrained metric has no train-time behaviour of its own.
        return super().train(False)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """VGG16 activations at relu1_2..relu5_3 for ``(N, 3, H, W)`` input in [-1, 1]."""
        h = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)``, ``(N, 3, H, W)`` -> ``(N, 1, 1, 1)`` LPIPS distance."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two (N, 3, H, W) images of equal shape, got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        total = x.new_zeros(x.shape[0], 1, 1, 1)
        for fx, fy, lin in zip(self.feature_maps(x), self.feature_maps(y), self.lins, strict=True):
            diff = (normalize_channels(fx) - normalize_channels(fy)).pow(2)
            total = total + lin(diff).mean(dim=(2, 3), keepdim=True)
        return total

    @classmethod
    def from_pretrained(cls, *paths: str | os.PathLike) -> LPIPS:
        """Build LPIPS and load trunk and heads from one or more local files (see module docstring)."""
        model = cls()
        load_lpips_weights(model, *paths)
        return model

    def save(self, path: str | os.PathLike) -> Path:
        """Write trunk and heads to a safetensors file (atomically), loadable by :meth:`from_pretrained`."""
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        return atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def convert_lpips_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision / lpips-package keys to this module's names; unrelated keys are dropped."""
    out = {}
    n_feat = _TAPS[-1] + 1
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("perceptual_loss.")
        if m := re.fullmatch(r"(?:net\.)?features\.(\d+)\.(weight|bias)", key):
            if int(m[1]) < n_feat:
                out[f"features.{m[1]}.{m[2]}"] = value
        elif m := re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", key):
            out[f"features.{m[1]}.{m[2]}"] = value
        elif m := re.fullmatch(r"lins?\.?(\d)(?:\.model\.1)?\.weight", key):
            out[f"lins.{m[1]}.weight"] = value
    return out


def load_lpips_weights(model: LPIPS, *paths: str | os.PathLike) -> None:
    """Load LPIPS weights from local files (safetensors or ``torch.load(weights_only=True)``).

    The files are merged (e.g. torchvision's ``vgg16-397923af.pth`` plus the lpips ``vgg.pth`` heads);
    every trunk conv and all five heads must be present, else a ``ValueError`` lists what is missing.
    """
    if not paths:
        raise ValueError("load_lpips_weights needs at least one weights file")
    merged: dict[str, torch.Tensor] = {}
    for p in paths:
        merged.update(convert_lpips_keys(load_state_dict(p)))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(merged))
    if missing:
        names = ", ".join(str(p) for p in paths)
        raise ValueError(f"{names}: perceptual-loss weights lack {len(missing)} tensors, e.g. {missing[:4]}")
    for key, value in merged.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"perceptual-loss weight {key} has shape {tuple(value.shape)}, "
                             f"expected {tuple(expected[key].shape)}")
    model.load_state_dict(merged, strict=True)
