"""The Slice VAE: causal 3D-convolution video VAE (8x space, 4x time) with sliced, constant-memory
encode/decode and spatial tiling.

Time structure (the same as the released EasyAnimate V5.1 VAE and diffusers' `AutoencoderKLMagvit`):
frame 0 is encoded on its own into latent 0 and every further 4 frames into one latent, so
`F = 1 + 4k` frames <-> `1 + k` latents.

How the released model treats slice boundaries, and why one function covers every slicing: diffusers
always runs frame 0 (latent 0) alone and then chunks of 4 frames (1 latent), each causal conv
carrying its last frames (`prev_features`) to the next chunk. Its temporal downsamplers (stride 2)
then sit on the grid 0, 2, 4, ... of the whole video; its temporal upsamplers skip upsampling on their
first call only, i.e. frame 0 stays alone and every later frame is doubled (nearest, since
`spatial_group_norm=True`; the trilinear variant for `False` would mix frames within a chunk, so that
setting is refused); GroupNorm is per frame and the V5.1 mid block has no attention. Nothing in it
therefore depends on where chunks end, and `SliceVAE` defines the same function of the whole video:

* unsliced: one pass over all frames;
* `scheme="streaming"`: `encode_frames` frames / `decode_latents` latents per slice (frame 0 /
  latent 0 ride with the first), each causal convolution carrying its last frames to the next slice
  in a `StreamCache`. Equal to the unsliced result and to diffusers to float rounding, for any slice
  length; peak memory is that of one slice.
* `scheme="shared"` (the paper's feature sharing, decode only): every latent slice is decoded on its own,
  but `conv_in` and the mid block see the previous and next `decode_latents` latents as context before
  the features are cropped back to the slice. Close to, not equal to, the unsliced result. Note that the
  convolutions are causal and the mid-block attention is per frame, so only the previous slice can
  change the result; the next one is passed for fidelity to the paper. Encoding always streams.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ea_core.atomic import atomic_write, atomic_write_text
from ea_core.files import load_safetensors, read_json_object

from .blocks import BLOCKS, MidBlock3D
from .causal_conv import CausalConv3d
from .causal_conv_fast import conv_normed
from .config import SliceVAEConfig
from .convert import config_from_diffusers, is_diffusers_config, load_diffusers_state_dict
from .distribution import DiagonalGaussian
from .layout import pointwise_conv, to_frames
from .stream import StreamCache, Workspace
from .tiling import Tile, make_tiles

SCHEMES = ("streaming", "shared")


class Encoder(nn.Module):
    """`conv_in` -> down blocks -> mid block -> GroupNorm, act -> `conv_out` (2 x latent channels)."""

    def __init__(self, cfg: SliceVAEConfig):
        super().__init__()
        ch, g, eps, act = cfg.block_out_channels, cfg.norm_num_groups, cfg.norm_eps, cfg.act_fn
        self.act = act
        self.conv_in = CausalConv3d(cfg.in_channels, ch[0], 3)
        self.down_blocks = nn.ModuleList()
        out = ch[0]
        for i, kind in enumerate(cfg.down_block_types):
            inp, out = out, ch[i]
            self.down_blocks.append(
                BLOCKS[kind](inp, out, cfg.layers_per_block, g, eps, act, add_downsample=i < len(ch) - 1)
            )
        self.mid_block = MidBlock3D(ch[-1], cfg.layers_per_block, g, eps, act,
                                    cfg.mid_block_attention, cfg.mid_block_attention_heads)
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=eps)
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels, 3)

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        """x: frames-first `(B, T, C_in, H, W)` -> moments before `quant_conv` `(B, T', 2C, H/8, W/8)`."""
        h = self.conv_in(x, cache)
        for block in self.down_blocks:
            h = block(h, cache)
        h = self.mid_block(h, cache)
        return conv_normed(self.conv_out, h, self.conv_norm_out, self.act, cache)


class Decoder(nn.Module):
    """`conv_in` -> mid block -> up blocks (`layers_per_block + 1` ResNets each) -> GroupNorm, act -> `conv_out`."""

    def __init__(self, cfg: SliceVAEConfig):
        super().__init__()
        ch, g, eps, act = tuple(reversed(cfg.block_out_channels)), cfg.norm_num_groups, cfg.norm_eps, cfg.act_fn
        self.act = act
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[0], 3)
        self.mid_block = MidBlock3D(ch[0], cfg.layers_per_block, g, eps, act,
                                    cfg.mid_block_attention, cfg.mid_block_attention_heads)
        self.up_blocks = nn.ModuleList()
        out = ch[0]
        for i, kind in enumerate(cfg.up_block_types):
            inp, out = out, ch[i]
            self.up_blocks.append(
                BLOCKS[kind](inp, out, cfg.layers_per_block + 1, g, eps, act, add_upsample=i < len(ch) - 1)
            )
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=eps)
        self.conv_out = CausalConv3d(ch[-1], cfg.out_channels, 3)  # last weight: the adaptive GAN weight uses it

    def mid(self, z: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        """z: frames-first latents `(B, T, C, h, w)` -> mid-block features `(B, T, C_mid, h, w)`."""
        return self.mid_block(self.conv_in(z, cache), cache)

    def up(self, h: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        """Mid-block features -> frames-first video `(B, F, C_out, 8h, 8w)`."""
        doubled = None
        for block in self.up_blocks:
            following = block.doubles_time(cache)  # asked before the upsampler marks itself started
            h = block(h, cache, doubled)
            doubled = following
        return conv_normed(self.conv_out, h, self.conv_norm_out, self.act, cache)

    def forward(self, z: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        return self.up(self.mid(z, cache), cache)


@dataclass
class Slicing:
    encode_frames: int
    decode_latents: int
    scheme: str


@dataclass
class Tiling:
    tile_size: int
    overlap: float


class SliceVAE(nn.Module):
    """Causal video VAE. `encode((B, 3, 1 + 4k, H, W) in [-1, 1]) -> DiagonalGaussian` over latents
    `(B, C, 1 + k, H/8, W/8)`; `decode(latents) -> (B, 3, 1 + 4k, H, W)`. Scaling latents by
    `config.scaling_factor` is left to the caller.

    `progress_callback(done, total)`, if set, is called after every temporal slice.
    """

    def __init__(self, config: SliceVAEConfig | None = None):
        super().__init__()
        self.config = config if config is not None else SliceVAEConfig()
        c = self.config.latent_channels
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quant_conv = nn.Conv3d(2 * c, 2 * c, 1)
        self.post_quant_conv = nn.Conv3d(c, c, 1)
        self.slicing: Slicing | None = None
        self.tiling: Tiling | None = None
        self.progress_callback: Callable[[int, int], None] | None = None

    # ------------------------------------------------------------------ initialisation
    def init_posterior_logvar(self, value: float) -> None:
        """Set the bias of `quant_conv`'s log-variance outputs to `value` (weights kept).

        A freshly initialised VAE's posterior has std ~1 around a mean of rms ~0.2: the latent sample
        is mostly noise, and the encoder must first grow its mean ~25x before reconstructions improve
        (a long early phase of training). Starting at e.g. `value=-6` (std ~0.05) lets them improve from
        the first steps; the KL term (weight 1e-6) hardly pulls it back. Call it before training, not
        on trained weights.
        """
        value = float(value)
        if not -30.0 <= value <= 20.0:
            raise ValueError(f"posterior log-variance {value} is outside DiagonalGaussian's clamp [-30, 20]")
        c = self.config.latent_channels
        with torch.no_grad():
            self.quant_conv.bias[c:].fill_(value)

    # ------------------------------------------------------------------ switches
    def enable_slicing(self, encode_frames: int = 4, decode_latents: int = 1, scheme: str = "streaming") -> None:
        """Encode `encode_frames` frames and decode `decode_latents` latents at a time (after frame 0 /
        latent 0, which go alone). `scheme`: "streaming" (exact) or "shared" (paper's feature sharing)."""
        tc = self.config.temporal_compression
        if not isinstance(encode_frames, int) or encode_frames < tc or encode_frames % tc:
            raise ValueError(f"encode_frames={encode_frames!r}; it must be a positive multiple of {tc}")
        if not isinstance(decode_latents, int) or decode_latents < 1:
            raise ValueError(f"decode_latents={decode_latents!r}; it must be a positive integer")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme={scheme!r}; expected one of {SCHEMES}")
        self.slicing = Slicing(encode_frames, decode_latents, scheme)

    def disable_slicing(self) -> None:
        self.slicing = None

    def enable_tiling(self, tile_size: int = 384, overlap: float = 0.25) -> None:
        """Encode/decode frames in `tile_size` x `tile_size` pixel tiles that overlap by `overlap` of a tile,
        blended with linear ramps. Independent of slicing."""
        sc = self.config.spatial_compression
        if not isinstance(tile_size, int) or tile_size < 2 * sc or tile_size % sc:
            raise ValueError(f"tile_size={tile_size!r}; it must be a multiple of {sc} and at least {2 * sc} pixels")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap={overlap!r}; it must be a fraction of a tile in [0, 1)")
        tile = tile_size // sc
        if tile - round(tile * overlap) < 1:
            raise ValueError(f"overlap={overlap} of a {tile_size}-pixel tile leaves no stride between tiles")
        self.tiling = Tiling(tile_size, float(overlap))

    def disable_tiling(self) -> None:
        self.tiling = None

    # ------------------------------------------------------------------ input checks
    def _check(self, x: torch.Tensor, name: str, channels: int, layout: str) -> None:
        if not torch.is_tensor(x):
            raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
        if x.ndim != 5:
            hint = "; for an image add a frame axis with x.unsqueeze(2)" if x.ndim == 4 else ""
            raise ValueError(f"{name} has shape {tuple(x.shape)}; SliceVAE expects {layout}{hint}")
        if x.shape[1] != channels:
            raise ValueError(f"{name} has {x.shape[1]} channels (shape {tuple(x.shape)}); SliceVAE expects {layout}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} has batch size 0 (shape {tuple(x.shape)}); SliceVAE needs at least one video")
        p = self.post_quant_conv.weight
        if not x.is_floating_point():
            raise TypeError(f"{name} has dtype {x.dtype}; SliceVAE expects floating point values")
        if x.device != p.device:
            raise ValueError(f"{name} is on {x.device} but the SliceVAE weights are on {p.device}; move one of them")
        if x.dtype != p.dtype:
            raise TypeError(
                f"{name} is {x.dtype} but the SliceVAE weights are {p.dtype}; use x.to({p.dtype}) or vae.to({x.dtype})"
            )
        # One cheap pass (a fraction of the first conv's cost) so NaN/inf input fails here, not as a NaN video.
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values; SliceVAE needs finite input")

    def _tiles(self, lat_h: int, lat_w: int, encode: bool) -> list[Tile]:
        sc = self.config.spatial_compression
        scales = (sc, 1) if encode else (1, sc)
        if self.tiling is None:
            return make_tiles(lat_h, lat_w, max(lat_h, lat_w), 0, *scales)
        tile = self.tiling.tile_size // sc
        return make_tiles(lat_h, lat_w, tile, round(tile * self.tiling.overlap), *scales)

    def _frame_of(self, latent: int) -> int:
        """First frame decoded from latent `latent` (frame 0 for latent 0, then 4 frames per latent)."""
        return 0 if latent == 0 else 1 + (latent - 1) * self.config.temporal_compression

    def _latent_slices(self, n: int, per_slice: int | None) -> list[tuple[int, int]]:
        """Latent ranges of the temporal slices: latent 0 (frame 0) rides with the first slice, which the
        released model processes alone; streaming is exact for any cut, so this only saves one pass."""
        if per_slice is None:
            return [(0, n)]
        return [(0, min(1 + per_slice, n))] + [(s, min(s + per_slice, n)) for s in range(1 + per_slice, n, per_slice)]

    @staticmethod
    def _workspace(passes: int) -> Workspace | None:
        """Scratch buffers recycled between the slices and tiles of one call; a single pass has no use for them
        (they would only keep freed buffers alive)."""
        return Workspace() if passes > 1 else None

    def _report(self, done: int, total: int) -> None:
        if self.progress_callback is not None:
            self.progress_callback(done, total)

    @staticmethod
    def _write(out: torch.Tensor, y: torch.Tensor, tile: Tile, t0: int, t1: int) -> None:
        """Blend frames-first `y` `(B, T, C, h, w)` into `out[:, :, t0:t1]` at the tile's output region."""
        region = out[:, :, t0:t1, tile.out_y[0] : tile.out_y[1], tile.out_x[0] : tile.out_x[1]]
        y = y.permute(0, 2, 1, 3, 4)
        if tile.weight is None:
            region.copy_(y)
        else:
            region.addcmul_(y, tile.weight.to(device=y.device, dtype=y.dtype))

    # ------------------------------------------------------------------ encode / decode
    def encode(self, video: torch.Tensor) -> DiagonalGaussian:
        """video `(B, in_channels, 1 + 4k, H, W)` in [-1, 1], H and W multiples of 8 ->
        posterior over latents `(B, latent_channels, 1 + k, H/8, W/8)`."""
        cfg = self.config
        sc, tc = cfg.spatial_compression, cfg.temporal_compression
        self._check(video, "video", cfg.in_channels, f"(B, {cfg.in_channels}, F, H, W)")
        b, _, f, hgt, wid = video.shape
        if f < 1 or (f - 1) % tc:
            lo = f - (f - 1) % tc if f > 1 else 1
            raise ValueError(f"video has {f} frames; SliceVAE needs 1 + {tc}k frames (e.g. {lo} or {lo + tc})")
        if hgt % sc or wid % sc or hgt == 0 or wid == 0:
            raise ValueError(f"video frames are {hgt}x{wid} (HxW); SliceVAE needs height and width divisible by {sc}")
        n_lat = 1 + (f - 1) // tc
        per = None if self.slicing is None else self.slicing.encode_frames // tc
        slices = self._latent_slices(n_lat, per)
        tiles = self._tiles(hgt // sc, wid // sc, encode=True)
        shape = (b, 2 * cfg.latent_channels, n_lat, hgt // sc, wid // sc)
        moments = video.new_zeros(shape) if len(tiles) > 1 else video.new_empty(shape)
        workspace = self._workspace(len(slices) * len(tiles))
        caches = [StreamCache(workspace=workspace) for _ in tiles]
        for i, (l0, l1) in enumerate(slices):
            f0, f1 = self._frame_of(l0), self._frame_of(l1)
            for tile, cache in zip(tiles, caches):
                x = to_frames(video[:, :, f0:f1, tile.y[0] : tile.y[1], tile.x[0] : tile.x[1]])
                m = pointwise_conv(self.quant_conv, self.encoder(x, cache))
                self._write(moments, m, tile, l0, l1)
            self._report(i + 1, len(slices))
        return DiagonalGaussian.from_moments(moments)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents `(B, latent_channels, 1 + k, h, w)` (unscaled) -> video `(B, out_channels, 1 + 4k, 8h, 8w)`."""
        cfg = self.config
        sc = cfg.spatial_compression
        c = cfg.latent_channels
        self._check(latents, "latents", c, f"(B, {c}, T, h, w)")
        b, _, n_lat, lh, lw = latents.shape
        if n_lat < 1 or lh < 1 or lw < 1:
            raise ValueError(f"latents have shape {tuple(latents.shape)}; need at least one latent frame and pixel")
        shared = self.slicing is not None and self.slicing.scheme == "shared"
        per = None if self.slicing is None else self.slicing.decode_latents
        slices = self._latent_slices(n_lat, per)
        tiles = self._tiles(lh, lw, encode=False)
        shape = (b, cfg.out_channels, self._frame_of(n_lat), lh * sc, lw * sc)
        out = latents.new_zeros(shape) if len(tiles) > 1 else latents.new_empty(shape)
        workspace = self._workspace(len(slices) * len(tiles))
        caches = [StreamCache(workspace=workspace) for _ in tiles]
        for i, (l0, l1) in enumerate(slices):
            f0, f1 = self._frame_of(l0), self._frame_of(l1)
            for tile, cache in zip(tiles, caches):
                if shared:
                    y = self._decode_shared(latents, l0, l1, tile, workspace)
                else:
                    z = to_frames(latents[:, :, l0:l1, tile.y[0] : tile.y[1], tile.x[0] : tile.x[1]])
                    y = self.decoder(pointwise_conv(self.post_quant_conv, z), cache)
                self._write(out, y, tile, f0, f1)
                del y
            self._report(i + 1, len(slices))
        return out

    def _decode_shared(self, latents: torch.Tensor, l0: int, l1: int, tile: Tile,
                       workspace: Workspace | None = None) -> torch.Tensor:
        """Paper's feature sharing: `conv_in` + mid block over [previous slice, slice, next slice], crop back
        to the slice, then the up blocks on the slice alone. Returns frames-first `(B, F_slice, C, H, W)`."""
        n = self.slicing.decode_latents
        c0, c1 = max(0, l0 - n), min(latents.shape[2], l1 + n)
        z = to_frames(latents[:, :, c0:c1, tile.y[0] : tile.y[1], tile.x[0] : tile.x[1]])
        h = self.decoder.mid(pointwise_conv(self.post_quant_conv, z), StreamCache(workspace=workspace))
        h = h[:, l0 - c0 : l1 - c0]
        return self.decoder.up(h, StreamCache(continuing=l0 > 0, workspace=workspace))

    def forward(self, video: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruction and posterior: `(decode(z), q(z | video))`, z sampled or the posterior mean."""
        posterior = self.encode(video)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    # ------------------------------------------------------------------ weights
    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write `config.json` and `model.safetensors` into folder `path` (atomically, file by file)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": "SliceVAE", **self.config.to_dict()}
        atomic_write_text(path / "config.json", json.dumps(config, indent=2))
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(path / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> SliceVAE:
        """Load a SliceVAE folder (`config.json` + `model.safetensors`) or a diffusers
        `AutoencoderKLMagvit` folder (detected from `_class_name` in its `config.json`; keys are converted).

        A pipeline folder with a `vae/` subfolder works too. Like every `from_pretrained` of these
        packages, the model comes back in eval mode (call `.train()` to train it), in `dtype` on `device`.
        """
        path = Path(path)
        if path.is_file():
            raise NotADirectoryError(f"{path} is a file; SliceVAE.from_pretrained takes the folder that holds "
                                     f"config.json and model.safetensors (here perhaps {path.parent})")
        if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
            path = path / "vae"
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            where = "" if path.exists() else "; the folder does not exist"
            raise FileNotFoundError(f"{path}: no config.json{where} (expected a SliceVAE or diffusers "
                                    "AutoencoderKLMagvit folder)")
        raw = read_json_object(cfg_file)
        if is_diffusers_config(raw):
            try:
                config = config_from_diffusers(raw)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{cfg_file}: {e}") from None
            state, source = load_diffusers_state_dict(path)
        else:
            if raw.get("_class_name", "SliceVAE") != "SliceVAE":
                raise ValueError(f"{cfg_file}: _class_name is {raw['_class_name']!r}; expected SliceVAE or AutoencoderKLMagvit")
            try:
                config = SliceVAEConfig.from_dict(raw)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{cfg_file}: {e}") from None
            source = path / "model.safetensors"
            if not source.is_file():
                raise FileNotFoundError(f"{path}: no model.safetensors next to config.json")
            state = load_safetensors(source)
        model = cls(config)
        model.load_checked(state, source)
        if dtype is not None or device is not None:
            model.to(device=device, dtype=dtype)
        return model.eval()

    def load_checked(self, state: dict[str, torch.Tensor], source: str | os.PathLike = "state dict") -> None:
        """`load_state_dict` that names the file and the missing / unexpected / mis-shaped keys."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
            if shapes:
                parts.append(f"{len(shapes)} with wrong shapes (e.g. {shapes[:3]})")
            raise ValueError(f"{source}: weights do not fit the config: " + "; ".join(parts))
        self.load_state_dict(state)

