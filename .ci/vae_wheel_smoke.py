"""Run inside a fresh venv holding only the ea-vae wheel (+ its `video` extra): encode and decode a video.

This is the "pip install ea-vae is enough to encode videos" promise.
"""

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ea_vae import SliceVAE, SliceVAEConfig
from ea_vae.video_io import frames_to_tensor, read_video, write_video

for other in ("transformers", "triton_kernels", "ea_dit", "ea_data", "ea_captions", "diffusers", "open_clip"):
    assert importlib.util.find_spec(other) is None, f"{other} is installed next to ea-vae alone"

with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    torch.manual_seed(0)
    SliceVAE(SliceVAEConfig.tiny()).save_pretrained(d / "vae")
    vae = SliceVAE.from_pretrained(d / "vae").eval()
    t = np.linspace(0, 1, 9)[:, None, None, None]
    frames = (np.broadcast_to(t, (9, 32, 48, 3)) * 200).astype(np.uint8)
    write_video(d / "in.mp4", frames, fps=8)
    video = frames_to_tensor(read_video(d / "in.mp4")[0])[None]  # (1, 3, 9, 32, 48)
    with torch.no_grad():
        latents = vae.encode(video).mode()
        out = vae.decode(latents)
    assert latents.shape[2:] == (3, 4, 6), latents.shape
    assert out.shape == video.shape, out.shape
    cli = Path(sys.executable).parent / "ea-vae"
    subprocess.run([str(cli), "roundtrip", str(d / "in.mp4"), str(d / "out.mp4"), "--model", str(d / "vae")],
                   check=True)
    assert read_video(d / "out.mp4")[0].shape == frames.shape
print("ea-vae wheel alone: encode + decode + CLI roundtrip OK", tuple(latents.shape), tuple(out.shape))
