"""`VideoDiT`: PixArt-alpha extended to video with motion modules and U-ViT long skips (EasyAnimate).

    latents (B, C, F, H, W) --patch embed per frame + 2D sin-cos positions--> tokens (B, F*N, D)
        (+ the frame index's sinusoid when `frame_position_embedding`; off in EasyAnimate V1)
    timestep (B,) --adaLN-single--> modulation (B, 6, D), embedding (B, D)
    text (B, T, 4096) --caption projection--> (B, T, D)
    blocks 0..depth-1 (VideoDiTBlock: spatial attn, motion module, cross-attn, MLP), with U-ViT skips:
        outputs of blocks 0..S-1 are pushed on a stack; before each of the last S blocks the most recent
        one is popped and added through a zero-initialised Linear(D, D)  (S = depth // 2 - 1; 13 for 28)
    final layer (adaLN-single modulated LayerNorm + Linear) --unpatchify--> (B, C_out, F, H, W)

With F = 1 and fresh (zero-initialised) motion modules and skips, the model computes exactly what the
PixArt image model it was loaded from computes. `from_pretrained` reads this package's format
(config.json + model.safetensors) or a diffusers `PixArtTransformer2DModel` folder.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from einops import rearrange
from safetensors.torch import save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from ea_core.atomic import atomic_write, atomic_write_text
from ea_core.files import load_safetensors, read_json_object
from ea_dit.blocks import VideoDiTBlock, modulate
from ea_dit.config import VideoDiTConfig
from ea_dit.embeddings import AdaLNSingle, CaptionProjection, PatchEmbed
from ea_dit.grid_reshape import TokenGrid
from ea_dit.motion_module import MotionModule, temporal_position_table
from ea_dit.pixart import config_from_pixart, convert_pixart_state_dict, load_diffusers_weights

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


class FinalLayer(nn.Module):
    """PixArt's output layer: LayerNorm modulated by `scale_shift_table (2, D) + c`, then Linear to patches."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), emb (B, D) -> (B, L, p*p*C_out)."""
        shift, scale = (self.scale_shift_table[None] + emb[:, None]).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class VideoDiT(nn.Module):
    """EasyAnimate's video diffusion transformer; see the module docstring for the data flow."""

    def __init__(self, config: VideoDiTConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = VideoDiTConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a VideoDiTConfig or keyword settings, not both")
        self.config = c = config
        d = c.hidden_size
        self.patch_embed = PatchEmbed(c.in_channels, d, c.patch_size, c.sample_size, c.interpolation_scale)
        self.adaln_single = AdaLNSingle(d, use_additional_conditions=c.use_additional_conditions)
        self.caption_projection = CaptionProjection(c.caption_channels, d)
        self.blocks = nn.ModuleList([
            VideoDiTBlock(d, c.num_heads, c.mlp_ratio, attention_bias=c.attention_bias, norm_eps=c.norm_eps,
                          norm_elementwise_affine=c.norm_elementwise_affine, backend=c.attention_backend,
                          motion_module=self._make_motion_module(i), self_attention=c.block_attention(i),
                          window_size=c.window_size, window_global_keys=c.window_global_keys)
            for i in range(c.depth)])
        self.long_skips = nn.ModuleList([nn.Linear(d, d) for _ in range(c.num_long_skips)])
        self.final_layer = FinalLayer(d, c.patch_size, c.out_channels)
        self.gradient_checkpointing = c.gradient_checkpointing
        self.initialize_weights()

    def _make_motion_module(self, index: int) -> MotionModule | None:
        c = self.config
        if not c.has_motion_module(index):
            return None
        return MotionModule(c.hidden_size, num_heads=c.motion_num_heads, grid=c.motion_grid,
                            max_len=c.motion_max_len, norm_groups=c.motion_norm_groups,
                            attention_backend=c.attention_backend)

    # ------------------------------------------------------------------------------------------
    # initialisation
    # ------------------------------------------------------------------------------------------

    def initialize_weights(self) -> None:
        """PixArt's init, plus the two zero inits that make a pretrained image DiT unchanged at insertion:

        - every motion module's `proj_out` is zero (the module returns its input);
        - every U-ViT skip projection is zero (the skip adds nothing).
        PixArt also zeroes the cross-attention output and the final linear layer.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        # PixArt's N(0, 0.02) for the timestep MLP, the caption projection and adaLN-single, with the std
        # scaled by sqrt(PixArt's fan-in / this fan-in) so that every layer keeps the output scale it has in
        # PixArt-alpha XL/2 (unchanged there: fan-in 256 frequencies, 4096 T5 channels, width 1152). With a
        # plain 0.02, a 64-wide model fed 32-channel captions starts with text features ~0.006 against a
        # residual stream ~10: measured, it then ignored the caption that placed an object left or right
        # for 3000 steps, and learned it with this scaling (see tests/ea_dit/test_conditioning.py).
        t_emb = self.adaln_single.timestep_embedder
        for layer, pixart_fan_in in ((t_emb.fc1, 256), (t_emb.fc2, 1152), (self.adaln_single.linear, 1152),
                                     (self.caption_projection.fc1, 4096), (self.caption_projection.fc2, 1152)):
            nn.init.normal_(layer.weight, std=0.02 * math.sqrt(pixart_fan_in / layer.in_features))
        for block in self.blocks:
            nn.init.zeros_(block.cross_attn.proj.weight)
            nn.init.zeros_(block.cross_attn.proj.bias)
            if block.motion_module is not None:
                block.motion_module.initialize_weights()
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        for skip in self.long_skips:
            nn.init.zeros_(skip.weight)
            nn.init.zeros_(skip.bias)

    # ------------------------------------------------------------------------------------------
    # switches
    # ------------------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embed.proj.weight.device

    def set_attention_backend(self, backend: str) -> None:
        """Switch every attention (spatial, cross, temporal) to "sdpa" | "xformers" | "triton"."""
        self.config.attention_backend = backend
        self.config.validate()
        for block in self.blocks:
            block.set_attention_backend(backend)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass (per-block checkpointing)."""
        self.gradient_checkpointing = self.config.gradient_checkpointing = enabled

    def motion_module_parameters(self) -> list[nn.Parameter]:
        """Parameters of the motion modules only (EasyAnimate stage 2 trains just these)."""
        return [p for b in self.blocks if b.motion_module is not None for p in b.motion_module.parameters()]

    # ------------------------------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------------------------------

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor | float, text_embeds: torch.Tensor,
                text_mask: torch.Tensor | None = None, resolution: torch.Tensor | None = None,
                aspect_ratio: torch.Tensor | None = None) -> torch.Tensor:
        """Predict noise (and the variance interpolation when learn_sigma) for a batch of latent videos.

        Args:
            latents: (B, C, F, H, W) VAE latents; H, W divisible by patch_size; F = 1 for images.
            timestep: (B,) diffusion steps (or a scalar for the whole batch).
            text_embeds: (B, T, caption_channels) T5 features.
            text_mask: (B, T) bool/int, True/1 = real token; None = every token is real.
            resolution: (B, 2) pixel (height, width), only for use_additional_conditions models;
                default from the latent size times `pixels_per_latent`.
            aspect_ratio: (B, 1) height / width, likewise.

        Returns:
            (B, C_out, F, H, W) in the model's dtype.
        """
        b, _, num_frames, height, width = self._check_inputs(latents, text_embeds, text_mask)
        c, p = self.config, self.config.patch_size
        tokens = TokenGrid(num_frames, height // p, width // p)
        timestep = self._broadcast_timestep(timestep, b)
        if c.use_additional_conditions:
            resolution, aspect_ratio = self._size_conditions(resolution, aspect_ratio, b, height, width)

        x = self.patch_embed(rearrange(latents.to(self.dtype), "b c f h w -> (b f) c h w"))
        x = rearrange(x, "(b f) n d -> b f n d", f=num_frames)
        if c.frame_position_embedding:  # (F, D) frame-index sinusoids, the same for every token of a frame
            x = x + temporal_position_table(num_frames, c.hidden_size, device=x.device).to(x.dtype)[None, :, None]
        x = x.flatten(1, 2)  # (B, F*N, D), frame-major
        modulation, emb = self.adaln_single(timestep, x.dtype, resolution, aspect_ratio)
        text = self.caption_projection(text_embeds.to(self.dtype))
        mask = None if text_mask is None else text_mask.to(torch.bool)

        skips: list[torch.Tensor] = []
        first_pop = c.depth - len(self.long_skips)
        for i, block in enumerate(self.blocks):
            if i >= first_pop:  # U-ViT: mirrored block of the first half, last in first out
                x = x + self.long_skips[i - first_pop](skips.pop())
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, modulation, text, mask, tokens, use_reentrant=False)
            else:
                x = block(x, modulation, text, mask, tokens)
            if i < len(self.long_skips):
                skips.append(x)

        x = self.final_layer(x, emb)  # (B, F*N, p*p*C_out)
        return rearrange(x, "b (f h w) (p q c) -> b c f (h p) (w q)", f=num_frames, h=tokens.height,
                         w=tokens.width, p=p, q=p)

    def _check_inputs(self, latents, text_embeds, text_mask) -> tuple[int, int, int, int, int]:
        c = self.config
        if not isinstance(latents, torch.Tensor) or latents.dim() != 5:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents has shape {shape}; VideoDiT expects (batch, channels, frames, height, "
                             "width) - add a frames axis of 1 for images")
        if not latents.is_floating_point():
            raise TypeError(f"latents has dtype {latents.dtype}; expected a floating-point tensor")
        b, ch, f, hh, ww = latents.shape
        if 0 in (b, f, hh, ww):
            raise ValueError(f"latents have shape {tuple(latents.shape)}; VideoDiT needs at least one video, "
                             "one frame and one latent pixel")
        if ch != c.in_channels:
            raise ValueError(f"latents have {ch} channels; this VideoDiT was built for in_channels={c.in_channels}")
        if hh % c.patch_size or ww % c.patch_size:
            raise ValueError(f"latent size {hh}x{ww} is not divisible by patch_size={c.patch_size}")
        if self.config.motion_module and any(bl.motion_module is not None for bl in self.blocks):
            g = c.motion_grid
            if (hh // c.patch_size) % g or (ww // c.patch_size) % g:
                raise ValueError(f"latent size {hh}x{ww} gives a {hh // c.patch_size}x{ww // c.patch_size} token "
                                 f"grid; Grid Reshape (motion_grid={g}) needs it divisible by {g}, i.e. latent "
                                 f"height and width divisible by {g * c.patch_size}")
            if f > c.motion_max_len:
                raise ValueError(f"latents have {f} frames; the motion module's position table covers "
                                 f"motion_max_len={c.motion_max_len}")
        if not isinstance(text_embeds, torch.Tensor) or text_embeds.dim() != 3:
            raise ValueError(f"text_embeds has shape {tuple(getattr(text_embeds, 'shape', ()))}; expected "
                             f"(batch, tokens, {c.caption_channels})")
        if text_embeds.shape[0] != b or text_embeds.shape[2] != c.caption_channels:
            raise ValueError(f"text_embeds has shape {tuple(text_embeds.shape)}; expected ({b}, tokens, "
                             f"{c.caption_channels}) to match {b} latents and caption_channels")
        if text_mask is not None and tuple(text_mask.shape) != tuple(text_embeds.shape[:2]):
            raise ValueError(f"text_mask has shape {tuple(text_mask.shape)}; expected (batch, tokens) = "
                             f"{tuple(text_embeds.shape[:2])}")
        for name, t in (("text_embeds", text_embeds), ("text_mask", text_mask)):
            if t is not None and t.device != latents.device:
                raise ValueError(f"{name} is on {t.device} but latents are on {latents.device}")
        # One cheap pass each (no work next to the blocks) so NaN/inf input fails here, not as NaN noise.
        if not torch.compiler.is_compiling():
            for name, t in (("latents", latents), ("text_embeds", text_embeds)):
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"{name} contains NaN or infinite values; VideoDiT needs finite input")
        return b, ch, f, hh, ww

    def _broadcast_timestep(self, timestep, batch: int) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=self.device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"timestep has shape {tuple(t.shape)}; expected ({batch},) or a scalar")
        return t

    def _size_conditions(self, resolution, aspect_ratio, batch: int, height: int, width: int):
        px = self.config.pixels_per_latent
        if resolution is None:
            resolution = torch.tensor([[height * px, width * px]], dtype=torch.float32).expand(batch, 2)
        if aspect_ratio is None:
            aspect_ratio = torch.full((batch, 1), height / width, dtype=torch.float32)
        resolution = torch.as_tensor(resolution, device=self.device).reshape(batch, -1)
        aspect_ratio = torch.as_tensor(aspect_ratio, device=self.device).reshape(batch, -1)
        if resolution.shape[1] != 2 or aspect_ratio.shape[1] != 1:
            raise ValueError(f"resolution must be (batch, 2) and aspect_ratio (batch, 1); got "
                             f"{tuple(resolution.shape)} and {tuple(aspect_ratio.shape)}")
        return resolution, aspect_ratio

    # ------------------------------------------------------------------------------------------
    # save / load
    # ------------------------------------------------------------------------------------------

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write `config.json` and `model.safetensors` into folder `path` (atomically, file by file)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, **self.config.to_dict()}
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        atomic_write_text(path / CONFIG_NAME, json.dumps(config, indent=2))
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, **overrides) -> VideoDiT:
        """Load a model saved by `save_pretrained`, or convert a diffusers `PixArtTransformer2DModel` folder.

        Like every `from_pretrained` of these packages, the model comes back in eval mode (call `.train()`
        to train it), with weights in `dtype` on `device`.

        Args:
            path: folder with config.json (a pipeline folder with a `transformer/` subfolder works too).
            dtype, device: where to put the weights.
            **overrides: config settings to change, e.g. `attention_backend="triton"`, `long_skip=False`,
                `motion_module_positions=(0, 2)`. For a PixArt folder the motion modules and U-ViT skips
                (absent there) are freshly initialised, i.e. zero: the result computes PixArt's output.
        """
        VideoDiTConfig.check_keys(overrides, "override")
        folder = Path(path)
        if folder.is_file():
            raise NotADirectoryError(f"{folder} is a file; VideoDiT.from_pretrained takes the folder that holds "
                                     f"{CONFIG_NAME} and {WEIGHTS_NAME} (here perhaps {folder.parent})")
        if not (folder / CONFIG_NAME).is_file() and (folder / "transformer" / CONFIG_NAME).is_file():
            folder = folder / "transformer"
        config_file = folder / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} does not exist; expected a folder written by "
                                    "VideoDiT.save_pretrained or a diffusers PixArtTransformer2DModel folder")
        raw = read_json_object(config_file)
        class_name = raw.get("_class_name")
        if class_name == "PixArtTransformer2DModel":
            config = _config_from(config_file, lambda: VideoDiTConfig.from_dict(
                {**config_from_pixart(raw, config_file), **overrides}, source=str(config_file)))
            model = cls(config)
            state = convert_pixart_state_dict(load_diffusers_weights(folder), config)
            fresh = True  # PixArt has no motion modules or skips: they stay freshly (zero-)initialised
        elif class_name in (None, cls.__name__):
            config = _config_from(config_file, lambda: VideoDiTConfig.from_dict({**raw, **overrides},
                                                                                 source=str(config_file)))
            model = cls(config)
            weights = folder / WEIGHTS_NAME
            if not weights.is_file():
                raise FileNotFoundError(f"{weights} does not exist (config.json is there)")
            state = load_safetensors(weights)
            fresh = False
        else:
            raise ValueError(f"{config_file} describes a {class_name!r}; VideoDiT loads its own folders and "
                             "diffusers PixArtTransformer2DModel folders")
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad_missing = [k for k in missing
                       if not (fresh and (k.startswith("long_skips.") or ".motion_module." in k))]
        if bad_missing or unexpected:
            raise ValueError(f"weights in {folder} do not match the config: missing {bad_missing[:8]}"
                             f"{'...' if len(bad_missing) > 8 else ''}, unexpected {unexpected[:8]}"
                             f"{'...' if len(unexpected) > 8 else ''}")
        return model.to(device=device, dtype=dtype).eval()


def _config_from(config_file: Path, build) -> VideoDiTConfig:
    """`build()`, with a bad value's message prefixed by the file it came from."""
    try:
        return build()
    except ValueError as err:
        if str(config_file) in str(err):
            raise
        raise ValueError(f"{config_file}: {err}") from None

