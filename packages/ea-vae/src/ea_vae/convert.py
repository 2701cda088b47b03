"""Loading diffusers `AutoencoderKLMagvit` folders (the released EasyAnimate VAEs) into `SliceVAE`.

The two layouts hold the same tensors under different names:

    diffusers                                   SliceVAE
    encoder.down_blocks.i.convs.j.*             encoder.down_blocks.i.resnets.j.*
    encoder.down_blocks.i.downsampler.conv.*    encoder.down_blocks.i.downsample.conv.*
    decoder.up_blocks.i.convs.j.*               decoder.up_blocks.i.resnets.j.*
    decoder.up_blocks.i.upsampler.conv.*        decoder.up_blocks.i.upsample.conv.*
    {en,de}coder.mid_block.convs.j.*            {en,de}coder.mid_block.resnets.j.*

Everything else (conv_in, conv_norm_out, conv_out, quant_conv, post_quant_conv, norms, shortcuts and
the EasyAnimate V5 mid-block `attentions.0.*`) keeps its name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ea_core.files import load_safetensors, load_torch_weights, read_json_object

from .config import SliceVAEConfig

DIFFUSERS_CLASS = "AutoencoderKLMagvit"

# (key prefix, diffusers' sub-module name, ours) for the sub-modules whose names differ
_RENAMED = [
    (r"encoder\.down_blocks\.\d+", "convs", "resnets"),
    (r"encoder\.down_blocks\.\d+", "downsampler", "downsample"),
    (r"decoder\.up_blocks\.\d+", "convs", "resnets"),
    (r"decoder\.up_blocks\.\d+", "upsampler", "upsample"),
    (r"(?:en|de)coder\.mid_block", "convs", "resnets"),
]
_TO_SLICEVAE = [(re.compile(rf"^({prefix})\.{theirs}\."), rf"\1.{ours}.") for prefix, theirs, ours in _RENAMED]
_TO_DIFFUSERS = [(re.compile(rf"^({prefix})\.{ours}\."), rf"\1.{theirs}.") for prefix, theirs, ours in _RENAMED]


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key, n = pattern.subn(repl, key)
        if n:
            break
    return key


def state_dict_from_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers `AutoencoderKLMagvit` keys -> `SliceVAE` keys (tensors unchanged)."""
    return {_rename(k, _TO_SLICEVAE): v for k, v in state.items()}


def state_dict_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`SliceVAE` keys -> diffusers `AutoencoderKLMagvit` keys (tensors made contiguous)."""
    return {_rename(k, _TO_DIFFUSERS): v.contiguous() for k, v in state.items()}


def is_diffusers_config(config: dict[str, Any]) -> bool:
    return config.get("_class_name") == DIFFUSERS_CLASS


def config_from_diffusers(config: dict[str, Any]) -> SliceVAEConfig:
    """A `SliceVAEConfig` from a diffusers / EasyAnimate `AutoencoderKLMagvit` `config.json`.

    `spatial_group_norm=False` (GroupNorm over a whole slice) is refused: its output depends on slicing.
    EasyAnimate V5's `mid_block_use_attention` is mapped to per-frame attention: the released models run
    the mid block on chunks of exactly one latent frame (4 frames per encoder chunk, 1 latent per decoder
    chunk), so their "3d" attention only ever saw one frame.
    """
    if not config.get("spatial_group_norm", True):
        raise ValueError(
            "AutoencoderKLMagvit config has spatial_group_norm=false (GroupNorm over whole slices); SliceVAE "
            "normalises each frame so that its output does not depend on slicing"
        )
    attention = None
    if config.get("mid_block_use_attention", False):
        kind = config.get("mid_block_attention_type", "3d")
        if kind not in ("3d", "spatial"):
            raise ValueError(f"AutoencoderKLMagvit mid_block_attention_type={kind!r} is not supported")
        attention = "spatial"
    kwargs: dict[str, Any] = {"mid_block_attention": attention}
    if attention:
        kwargs["mid_block_attention_heads"] = int(config.get("mid_block_num_attention_heads", 1))
    for name in ("in_channels", "out_channels", "latent_channels", "block_out_channels", "down_block_types",
                 "up_block_types", "layers_per_block", "act_fn", "norm_num_groups", "scaling_factor"):
        if name in config:
            kwargs[name] = config[name]
    return SliceVAEConfig(**kwargs)


def load_diffusers_state_dict(folder: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Read a diffusers model folder's weights (single or sharded safetensors, or a `.bin` loaded with
    `weights_only=True`) and convert the keys. Returns the state dict and the file it came from."""
    folder = Path(folder)
    single = folder / "diffusion_pytorch_model.safetensors"
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    binary = folder / "diffusion_pytorch_model.bin"
    if single.is_file():
        state, source = load_safetensors(single), single
    elif index.is_file():
        shards = sorted(set(read_json_object(index).get("weight_map", {}).values()))
        state = {}
        for shard in shards:
            state.update(load_safetensors(folder / shard))
        source = index
    elif binary.is_file():
        state, source = load_torch_weights(binary), binary
    else:
        raise FileNotFoundError(f"{folder}: AutoencoderKLMagvit folder without diffusion_pytorch_model weights")
    return state_dict_from_diffusers(state), source
