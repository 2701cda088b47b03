"""ea_dit: EasyAnimate's video DiT - PixArt-alpha with a motion module, Grid Reshape and U-ViT skips.

    from ea_dit import VideoDiT, VideoDiTConfig
    model = VideoDiT.from_pretrained(path)        # own folder or a diffusers PixArtTransformer2DModel folder
    out = model(latents, timestep, text_embeds, text_mask)   # (B, C, F, H, W) -> (B, C_out, F, H, W)
"""

from ea_dit.config import VideoDiTConfig
from ea_dit.diffusion import DiffusionConfig, GaussianDiffusion
from ea_dit.grid_reshape import TokenGrid
from ea_dit.model import VideoDiT
from ea_dit.motion_module import MotionModule, insert_motion_modules, video_frames
from ea_dit.pipeline import generate_latents
from ea_dit.text_encoder import T5TextEncoder

__version__ = "0.1.0"

__all__ = ["VideoDiT", "VideoDiTConfig", "MotionModule", "TokenGrid", "insert_motion_modules", "video_frames",
           "T5TextEncoder", "DiffusionConfig", "GaussianDiffusion", "generate_latents", "__version__"]
