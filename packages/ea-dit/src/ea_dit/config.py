"""`VideoDiTConfig`: the video DiT's hyper-parameters, defaults = PixArt-alpha XL/2 + EasyAnimate V1/V2.

PixArt-alpha XL/2: hidden 1152, depth 28, 16 heads, patch 2, adaLN-single, T5-XXL captions (4096
channels), learned sigma (output channels = 2 x input). EasyAnimate adds a motion module in every block
(8 heads, Grid Reshape with 2x2 cells, sinusoidal temporal positions up to 4096) and U-ViT long skips.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from dataclasses import dataclass

from ea_core.files import NON_NEGATIVE, POSITIVE, check_fields
from ea_dit.diffusion import check_prediction_type

ATTENTION_BACKENDS = ("sdpa", "xformers", "triton")
SELF_ATTENTION_TYPES = ("spatial", "full", "window")
# Sizes and counts that must be > 0 (checked with the types when a config is built).
_POSITIVE_FIELDS = ("in_channels", "out_channels", "sample_size", "patch_size", "hidden_size", "depth", "num_heads",
                    "mlp_ratio", "norm_eps", "caption_channels", "interpolation_scale", "pixels_per_latent",
                    "motion_num_heads", "motion_grid", "motion_max_len", "motion_norm_groups", "window_size")


@dataclass
class VideoDiTConfig:
    # --- latent input / output
    in_channels: int = 4  # VAE latent channels (4 for V1-V4 VAEs, 16 for V5)
    out_channels: int | None = None  # None: 2 * in_channels when learn_sigma, else in_channels
    learn_sigma: bool = True  # IDDPM: predict noise and the variance interpolation
    # What the first out channels predict: "epsilon" (noise; PixArt-alpha) or "v_prediction"
    # (alpha_t eps - sigma_t x0): see ea_dit.diffusion
    prediction_type: str = "epsilon"
    sample_size: int = 64  # latent height/width the model was trained at (64 = 512 px, 128 = 1024 px)
    patch_size: int = 2
    # --- transformer
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    attention_bias: bool = True
    norm_eps: float = 1e-6
    norm_elementwise_affine: bool = False  # PixArt's block LayerNorms have no affine parameters
    caption_channels: int = 4096  # T5-XXL
    # PixArt's position-embedding scaling: positions are measured on a base grid of
    # sample_size / patch_size tokens and divided by this; None = max(sample_size // 64, 1).
    interpolation_scale: float | None = None
    # PixArt 1024 models embed the image resolution and aspect ratio too; None = (sample_size == 128).
    use_additional_conditions: bool | None = None
    pixels_per_latent: int = 8  # VAE downsampling, for the default resolution condition
    attention_backend: str = "sdpa"  # "sdpa" | "xformers" | "triton"
    # Self-attention of each block, one value for all blocks or one per block: "spatial" (per frame;
    # the motion module adds time), "full" (3D over all frames' tokens) or "window" (hybrid window
    # attention, ea_dit.window_attention). All three use the same qkv/proj weights.
    self_attention: str | tuple[str, ...] = "spatial"
    window_size: int | None = None  # hybrid window length in tokens; None = tokens per frame
    window_global_keys: int = 1024  # about how many strided video keys every query also sees
    # --- motion module
    motion_module: bool = True
    motion_module_positions: tuple[int, ...] | None = None  # block indices; None = every block
    motion_num_heads: int = 8
    motion_grid: int = 2  # Grid Reshape cell size (1 = plain per-token temporal attention)
    motion_max_len: int = 4096  # length of the sinusoidal temporal position table
    # Add each frame's sinusoidal index (the motion module's table) to its tokens after the patch embedding,
    # so every layer, not only the motion modules' attention, knows which frame a token is in. Off in
    # EasyAnimate V1 (and then a one-frame model computes exactly PixArt's output).
    frame_position_embedding: bool = False
    motion_norm_groups: int = 32
    # --- U-ViT long skips and training switches
    long_skip: bool = True
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        check_fields(self, {**dict.fromkeys(_POSITIVE_FIELDS, POSITIVE), "motion_module_positions": NON_NEGATIVE,
                            "window_global_keys": NON_NEGATIVE})
        if self.out_channels is None:
            self.out_channels = 2 * self.in_channels if self.learn_sigma else self.in_channels
        if self.interpolation_scale is None:
            self.interpolation_scale = float(max(self.sample_size // 64, 1))
        if self.use_additional_conditions is None:
            self.use_additional_conditions = self.sample_size == 128
        if self.motion_module_positions is not None:
            self.motion_module_positions = tuple(int(i) for i in self.motion_module_positions)
        if not isinstance(self.self_attention, str):
            self.self_attention = tuple(self.self_attention)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent setting."""
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend {self.attention_backend!r} is unknown; choose one of "
                             f"{', '.join(ATTENTION_BACKENDS)}")
        if self.depth < 1 or self.patch_size < 1 or self.in_channels < 1:
            raise ValueError("depth, patch_size and in_channels must be positive")
        check_prediction_type(self.prediction_type)
        kinds = (self.self_attention,) if isinstance(self.self_attention, str) else self.self_attention
        bad = [k for k in kinds if k not in SELF_ATTENTION_TYPES]
        if bad:
            raise ValueError(f"self_attention {bad} unknown; choose among {', '.join(SELF_ATTENTION_TYPES)}")
        if not isinstance(self.self_attention, str) and len(kinds) != self.depth:
            raise ValueError(f"self_attention lists {len(kinds)} blocks but depth is {self.depth}")
        if self.use_additional_conditions and self.hidden_size % 3:
            raise ValueError(f"use_additional_conditions needs hidden_size divisible by 3 (resolution and "
                             f"aspect-ratio embeddings of hidden_size/3 each); got {self.hidden_size}")
        if self.motion_module:
            if self.hidden_size % self.motion_num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by motion_num_heads "
                                 f"{self.motion_num_heads}")
            if self.hidden_size % self.motion_norm_groups:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by motion_norm_groups "
                                 f"{self.motion_norm_groups} (the motion module's GroupNorm)")
            bad = [i for i in self.motion_module_positions or () if not 0 <= i < self.depth]
            if bad:
                raise ValueError(f"motion_module_positions {bad} are outside the {self.depth} blocks")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_long_skips(self) -> int:
        """U-ViT skips: depth 28 -> 13 (blocks 0..12 feed blocks 15..27); 0 when disabled."""
        return max(self.depth // 2 - 1, 0) if self.long_skip else 0

    def block_attention(self, block_index: int) -> str:
        """Self-attention type of block `block_index`: "spatial", "full" or "window"."""
        if isinstance(self.self_attention, str):
            return self.self_attention
        return self.self_attention[block_index]

    def has_motion_module(self, block_index: int) -> bool:
        if not self.motion_module:
            return False
        return self.motion_module_positions is None or block_index in self.motion_module_positions

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if d["motion_module_positions"] is not None:
            d["motion_module_positions"] = list(d["motion_module_positions"])
        if not isinstance(d["self_attention"], str):
            d["self_attention"] = list(d["self_attention"])
        return d

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def check_keys(cls, keys, what: str = "setting") -> None:
        """Raise TypeError naming each key that is not a config field, with the closest field name."""
        names = cls.field_names()
        for key in keys:
            if key not in names:
                close = difflib.get_close_matches(key, sorted(names), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"unknown VideoDiTConfig {what} {key!r}{hint}")

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> VideoDiTConfig:
        """Build from a dict (e.g. config.json, named by `source` in messages). Keys that are not fields
        are ignored with a warning naming them (a newer or foreign file may carry more keys)."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object (key: value), got a {type(d).__name__}")
        names = cls.field_names()
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names and not k.startswith("_")}
        if extra:
            hints = []
            for k in sorted(extra):
                close = difflib.get_close_matches(k, sorted(names), n=1)
                hints.append(f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k))
            warnings.warn(f"{source}: ignoring keys VideoDiTConfig does not know: {', '.join(hints)}",
                          stacklevel=2)
        return cls(**known)

    @classmethod
    def tiny(cls, **overrides) -> VideoDiTConfig:
        """A model small enough for CPU tests: hidden 64, depth 4, 4 heads, 32 caption channels."""
        base = dict(in_channels=4, sample_size=8, hidden_size=64, depth=4, num_heads=4, caption_channels=32,
                    motion_num_heads=4, motion_norm_groups=8, motion_max_len=64)
        base.update(overrides)
        return cls(**base)
