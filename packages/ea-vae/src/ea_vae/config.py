"""`SliceVAEConfig`: the architecture of the Slice VAE.

Defaults are the released EasyAnimate V5.1 video VAE (as ported to diffusers' `AutoencoderKLMagvit`):
channels 128/256/512/512, 16 latent channels, 8x spatial and 4x temporal compression, scaling 0.7125.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from ea_core.files import POSITIVE, check_fields

DOWN_BLOCK_TYPES = ("SpatialDownBlock3D", "SpatialTemporalDownBlock3D")
UP_BLOCK_TYPES = ("SpatialUpBlock3D", "SpatialTemporalUpBlock3D")
ACTIVATIONS = ("silu", "swish", "relu", "gelu", "mish")
MID_BLOCK_ATTENTION = (None, "spatial")


@dataclass
class SliceVAEConfig:
    """Architecture of a Slice VAE.

    The encoder is `conv_in` -> one down block per entry of `block_out_channels` (every block but the
    last halves H and W; `SpatialTemporalDownBlock3D` also halves time, first frame kept alone) ->
    mid block -> GroupNorm, activation -> `conv_out` to 2 x `latent_channels` (mean and log-variance).
    The decoder mirrors it with `layers_per_block + 1` ResNet blocks per up block.

    `mid_block_attention`: None (V5.1, no attention) or "spatial" (self-attention within each frame,
    as the earlier EasyAnimate VAEs had between the mid-block ResNets). Attention across frames is not
    offered: it would make the output depend on where the video is sliced.
    """

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    down_block_types: tuple[str, ...] = (
        "SpatialDownBlock3D",
        "SpatialTemporalDownBlock3D",
        "SpatialTemporalDownBlock3D",
        "SpatialTemporalDownBlock3D",
    )
    up_block_types: tuple[str, ...] = (
        "SpatialUpBlock3D",
        "SpatialTemporalUpBlock3D",
        "SpatialTemporalUpBlock3D",
        "SpatialTemporalUpBlock3D",
    )
    layers_per_block: int = 2
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    scaling_factor: float = 0.7125
    mid_block_attention: str | None = None
    mid_block_attention_heads: int = 1

    def __post_init__(self) -> None:
        check_fields(self, {name: POSITIVE for name in (
            "in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
            "norm_num_groups", "norm_eps", "scaling_factor", "mid_block_attention_heads")})
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.down_block_types = tuple(self.down_block_types)
        self.up_block_types = tuple(self.up_block_types)
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def spatial_compression(self) -> int:
        """Pixels per latent along H and W (8 for the released model)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def temporal_compression(self) -> int:
        """Frames per latent after the first (4 for the released model): F = 1 + 4k -> 1 + k latents."""
        n = sum(t == "SpatialTemporalDownBlock3D" for t in self.down_block_types[:-1])
        return 2**n

    # ------------------------------------------------------------------ checks and (de)serialisation
    def validate(self) -> None:
        n = len(self.block_out_channels)
        if n < 1:
            raise ValueError("SliceVAEConfig.block_out_channels must list at least one block")
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"SliceVAEConfig: block_out_channels has {n} entries but down_block_types has "
                f"{len(self.down_block_types)} and up_block_types {len(self.up_block_types)}; they must match"
            )
        for t in self.down_block_types:
            if t not in DOWN_BLOCK_TYPES:
                raise ValueError(f"SliceVAEConfig: unknown down block type {t!r}; expected one of {DOWN_BLOCK_TYPES}")
        for t in self.up_block_types:
            if t not in UP_BLOCK_TYPES:
                raise ValueError(f"SliceVAEConfig: unknown up block type {t!r}; expected one of {UP_BLOCK_TYPES}")
        n_down_t = sum(t == "SpatialTemporalDownBlock3D" for t in self.down_block_types[:-1])
        n_up_t = sum(t == "SpatialTemporalUpBlock3D" for t in self.up_block_types[:-1])
        if n_down_t != n_up_t:
            raise ValueError(
                f"SliceVAEConfig: the encoder downsamples time {n_down_t} times but the decoder upsamples it "
                f"{n_up_t} times; they must match"
            )
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(
                    f"SliceVAEConfig: block channels {c} are not divisible by norm_num_groups={self.norm_num_groups}"
                )
        if self.layers_per_block < 1:
            raise ValueError("SliceVAEConfig.layers_per_block must be at least 1")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"SliceVAEConfig: unknown act_fn {self.act_fn!r}; expected one of {ACTIVATIONS}")
        if self.mid_block_attention not in MID_BLOCK_ATTENTION:
            raise ValueError(
                f"SliceVAEConfig: mid_block_attention={self.mid_block_attention!r}; expected None or 'spatial'"
            )
        if self.mid_block_attention and self.block_out_channels[-1] % self.mid_block_attention_heads:
            raise ValueError(
                f"SliceVAEConfig: {self.block_out_channels[-1]} mid-block channels are not divisible by "
                f"mid_block_attention_heads={self.mid_block_attention_heads}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        d["down_block_types"] = list(self.down_block_types)
        d["up_block_types"] = list(self.up_block_types)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SliceVAEConfig:
        """Build a config from `to_dict()` output; keys starting with `_` (e.g. `_class_name`) are ignored."""
        if not isinstance(d, dict):
            raise ValueError(f"SliceVAEConfig: expected a JSON object (key: value), got a {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in names and not k.startswith("_"))
        if unknown:
            close = {k: difflib.get_close_matches(k, sorted(names), n=1) for k in unknown}
            hints = "".join(f"; {k!r}: did you mean {c[0]!r}?" for k, c in close.items() if c)
            raise ValueError(f"SliceVAEConfig: unknown config keys {unknown}{hints}")
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def tiny(cls, latent_channels: int = 4, **overrides: Any) -> SliceVAEConfig:
        """A few-hundred-kB VAE with the full 8x8x4 compression, for tests and CPU demos (random weights)."""
        kwargs: dict[str, Any] = dict(
            block_out_channels=(32, 32, 64, 64),
            latent_channels=latent_channels,
            layers_per_block=1,
            norm_num_groups=8,
        )
        kwargs.update(overrides)
        return cls(**kwargs)
