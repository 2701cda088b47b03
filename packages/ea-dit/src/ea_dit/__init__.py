"""ea_dit: EasyAnimate's video DiT - PixArt-alpha with a motion module, Grid Reshape and U-ViT skips.

    from ea_dit import VideoDiT, VideoDiTConfig
    model = VideoDiT.from_pretrained(path)        # own folder or a diffusers PixArtTransformer2DModel folder
    out = model(latents, timestep, text_embeds, text_mask)   # (B, C, F, H, W) -> (B, C_out, F, H, W)
    video = TextToVideoPipeline(model, vae, T5TextEncoder.from_pretrained(t5))(["a red ball"], 9, 64, 64)
"""

from ea_dit.config import VideoDiTConfig
from ea_dit.diffusion import DiffusionConfig, GaussianDiffusion
from ea_dit.grid_reshape import TokenGrid
from ea_dit.model import VideoDiT
from ea_dit.motion_module import MotionModule, insert_motion_modules, video_frames
from ea_dit.samplers import SAMPLERS, sample_ddim, sample_ddpm, sample_dpmpp_2m, sample_euler
from ea_dit.t2v import TextToVideoPipeline
from ea_dit.text_encoder import T5TextEncoder
from ea_dit.window_attention import HybridWindowAttention

__version__ = "0.1.0"

__all__ = ["VideoDiT", "VideoDiTConfig", "MotionModule", "TokenGrid", "insert_motion_modules", "video_frames",
           "T5TextEncoder", "HybridWindowAttention", "DiffusionConfig", "GaussianDiffusion", "TextToVideoPipeline",
           "SAMPLERS", "sample_ddpm", "sample_ddim", "sample_euler", "sample_dpmpp_2m", "__version__"]
