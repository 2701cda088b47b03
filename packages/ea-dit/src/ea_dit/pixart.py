"""Reading diffusers `PixArtTransformer2DModel` folders into `VideoDiT` (training stage 1's starting point).

Key correspondence (diffusers -> VideoDiT):

    pos_embed.proj                               -> patch_embed.proj
    adaln_single.emb.timestep_embedder.linear_1/2 -> adaln_single.timestep_embedder.fc1/fc2
    adaln_single.emb.resolution_embedder / aspect_ratio_embedder (1024 models) -> same names, fc1/fc2
    adaln_single.linear                          -> adaln_single.linear
    caption_projection.linear_1/2                -> caption_projection.fc1/fc2
    transformer_blocks.i.attn1.to_q|to_k|to_v    -> blocks.i.attn.qkv (concatenated)
    transformer_blocks.i.attn1.to_out.0          -> blocks.i.attn.proj
    transformer_blocks.i.attn2.to_q              -> blocks.i.cross_attn.q
    transformer_blocks.i.attn2.to_k|to_v         -> blocks.i.cross_attn.kv (concatenated)
    transformer_blocks.i.attn2.to_out.0          -> blocks.i.cross_attn.proj
    transformer_blocks.i.ff.net.0.proj / net.2   -> blocks.i.mlp.fc1 / fc2
    transformer_blocks.i.norm1/norm2 (if affine) -> blocks.i.norm1/norm2 (norm2 is the MLP's norm in both)
    transformer_blocks.i.scale_shift_table       -> blocks.i.scale_shift_table
    scale_shift_table, proj_out                  -> final_layer.scale_shift_table, final_layer.linear
"""

from __future__ import annotations

from pathlib import Path

import torch

from ea_core.files import load_safetensors, read_json_object
from ea_dit.config import VideoDiTConfig

WEIGHTS = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX = "diffusion_pytorch_model.safetensors.index.json"


def config_from_pixart(raw: dict, source: Path | str = "config.json") -> dict:
    """diffusers PixArtTransformer2DModel config -> VideoDiTConfig fields (raises on what VideoDiT cannot express)."""
    def need(key, expected, default):
        value = raw.get(key, default)
        if value != expected:
            raise ValueError(f"{source}: {key}={value!r} is not supported; VideoDiT implements PixArt's "
                             f"{key}={expected!r}")

    need("norm_type", "ada_norm_single", "ada_norm_single")
    need("activation_fn", "gelu-approximate", "gelu-approximate")
    need("attention_type", "default", "default")
    heads, head_dim = raw.get("num_attention_heads", 16), raw.get("attention_head_dim", 72)
    hidden = heads * head_dim
    if raw.get("caption_channels") is None:
        raise ValueError(f"{source}: caption_channels is missing; VideoDiT needs PixArt's caption projection")
    if raw.get("cross_attention_dim", hidden) not in (None, hidden):
        raise ValueError(f"{source}: cross_attention_dim={raw['cross_attention_dim']} differs from the hidden "
                         f"size {hidden}; PixArt projects captions to the hidden size")
    in_channels = raw.get("in_channels", 4)
    out_channels = raw.get("out_channels", 8)
    out_channels = in_channels if out_channels is None else out_channels
    sample_size = raw.get("sample_size", 128)
    use_add = raw.get("use_additional_conditions")
    return dict(
        in_channels=in_channels, out_channels=out_channels, learn_sigma=out_channels == 2 * in_channels,
        sample_size=sample_size, patch_size=raw.get("patch_size", 2), hidden_size=hidden,
        depth=raw.get("num_layers", 28), num_heads=heads, attention_bias=raw.get("attention_bias", True),
        norm_eps=raw.get("norm_eps", 1e-6), norm_elementwise_affine=raw.get("norm_elementwise_affine", False),
        caption_channels=raw["caption_channels"],
        interpolation_scale=raw.get("interpolation_scale") or max(sample_size // 64, 1),
        use_additional_conditions=(sample_size == 128) if use_add is None else use_add,
    )


def load_diffusers_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of a diffusers model folder (single or sharded safetensors)."""
    single, index = folder / WEIGHTS, folder / WEIGHTS_INDEX
    if single.is_file():
        return load_safetensors(single)
    if index.is_file():
        shards = sorted(set(read_json_object(index).get("weight_map", {}).values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_safetensors(folder / shard))
        return state
    raise FileNotFoundError(f"{folder} has no {WEIGHTS} or {WEIGHTS_INDEX}; only safetensors weights are read "
                            "(re-save a .bin checkpoint with save_pretrained(safe_serialization=True))")


def convert_pixart_state_dict(sd: dict[str, torch.Tensor], config: VideoDiTConfig) -> dict[str, torch.Tensor]:
    """Rename/concatenate a diffusers PixArt state dict into VideoDiT keys; raises on leftover keys."""
    sd = dict(sd)
    out: dict[str, torch.Tensor] = {}

    def move(src: str, dst: str, optional: bool = False) -> None:
        for suffix in (".weight", ".bias"):
            if src + suffix in sd:
                out[dst + suffix] = sd.pop(src + suffix)
            elif not optional and suffix == ".weight":
                raise KeyError(f"PixArt weights lack {src + suffix}")

    def concat(srcs: list[str], dst: str) -> None:
        for suffix in (".weight", ".bias"):
            parts = [sd.pop(s + suffix) for s in srcs if s + suffix in sd]
            if parts:
                out[dst + suffix] = torch.cat(parts, dim=0)

    move("pos_embed.proj", "patch_embed.proj")
    emb = "adaln_single.emb."
    move(emb + "timestep_embedder.linear_1", "adaln_single.timestep_embedder.fc1")
    move(emb + "timestep_embedder.linear_2", "adaln_single.timestep_embedder.fc2")
    if config.use_additional_conditions:
        for name in ("resolution_embedder", "aspect_ratio_embedder"):
            move(f"{emb}{name}.linear_1", f"adaln_single.{name}.fc1")
            move(f"{emb}{name}.linear_2", f"adaln_single.{name}.fc2")
    move("adaln_single.linear", "adaln_single.linear")
    move("caption_projection.linear_1", "caption_projection.fc1")
    move("caption_projection.linear_2", "caption_projection.fc2")
    for i in range(config.depth):
        src, dst = f"transformer_blocks.{i}.", f"blocks.{i}."
        concat([src + "attn1.to_q", src + "attn1.to_k", src + "attn1.to_v"], dst + "attn.qkv")
        move(src + "attn1.to_out.0", dst + "attn.proj")
        move(src + "attn2.to_q", dst + "cross_attn.q")
        concat([src + "attn2.to_k", src + "attn2.to_v"], dst + "cross_attn.kv")
        move(src + "attn2.to_out.0", dst + "cross_attn.proj")
        move(src + "ff.net.0.proj", dst + "mlp.fc1")
        move(src + "ff.net.2", dst + "mlp.fc2")
        move(src + "norm1", dst + "norm1", optional=True)
        move(src + "norm2", dst + "norm2", optional=True)
        out[dst + "scale_shift_table"] = sd.pop(src + "scale_shift_table")
    out["final_layer.scale_shift_table"] = sd.pop("scale_shift_table")
    move("proj_out", "final_layer.linear")
    sd.pop("pos_embed.pos_embed", None)  # a cached buffer; VideoDiT computes positions per resolution
    if sd:
        raise ValueError(f"PixArt weights have keys VideoDiT does not know: {sorted(sd)[:8]}")
    return out
