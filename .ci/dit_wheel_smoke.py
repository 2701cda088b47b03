"""Run inside a fresh venv holding the ea-dit wheel with triton uninstalled: import, forward and backward.

Triton is Linux-only, so the plain (SDPA) model must never need it: this is the "pip install ea-dit
runs on macOS and Windows" promise, checked on Linux by uninstalling triton.
"""

import importlib.util
import sys

import torch

import ea_dit
from ea_dit import MotionModule, VideoDiT, VideoDiTConfig
from ea_dit.grid_reshape import TokenGrid

assert importlib.util.find_spec("triton") is None, "triton is still installed; the CI step uninstalls it"

torch.manual_seed(0)
model = VideoDiT(VideoDiTConfig.tiny(depth=2))
for p in model.parameters():  # wake the zero-initialised layers so every path contributes
    p.data.add_(torch.randn_like(p) * 0.05)
latents = torch.randn(2, 4, 3, 8, 8)  # (B, C, F, H, W): 3 frames, motion modules and U-ViT skips active
text = torch.randn(2, 6, 32)
out = model(latents, torch.tensor([10.0, 500.0]), text, torch.ones(2, 6, dtype=torch.bool))
assert out.shape == (2, 8, 3, 8, 8), out.shape
out.square().mean().backward()
assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)

mm = MotionModule(32, num_heads=4, norm_groups=8)
assert mm(torch.randn(6, 16, 32), TokenGrid(3, 4, 4)).shape == (6, 16, 32)

loaded = [m for m in sys.modules if m == "triton" or m.startswith(("triton.", "ea_dit.kernels"))]
assert not loaded, f"the plain path imported {loaded}"
print(f"ea-dit {ea_dit.__version__} without triton: import, VideoDiT forward + backward, MotionModule OK",
      tuple(out.shape))
