"""LoRA adapters on a model's linear layers (attention and MLP projections of the DiT blocks).

Each adapted `nn.Linear` keeps its weights and keys and gains two children, `lora_down (r x in)` and
`lora_up (out x r)`, plus a forward hook adding `scale * (alpha / r) * lora_up(lora_down(x))` to its
output. `lora_up` starts at zero, so a fresh adapter leaves the model unchanged.

    names = add_lora(dit, rank=16)                  # attention + MLP projections of every block
    save_lora(dit, "lora.safetensors")              # adapter weights only
    load_lora(base, "lora.safetensors", scale=0.8)  # on another copy of the base model
    merge_lora(base)                                # fold into the weights; removes the adapters
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ea_core.atomic import atomic_write

# module-name suffixes of the DiT's attention and MLP projections (spatial, cross and MLP per block)
DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "cross_attn.q", "cross_attn.kv", "cross_attn.proj", "mlp.fc1",
                   "mlp.fc2")
LORA_KEYS = (".lora_down.", ".lora_up.")


def _lora_hook(module: nn.Linear, inputs, output):
    return output + module.lora_up(module.lora_down(inputs[0])) * (module.lora_alpha / module.lora_rank *
                                                                   module.lora_scale)


def add_lora(model: nn.Module, rank: int, targets: tuple[str, ...] = DEFAULT_TARGETS, alpha: float | None = None,
             scale: float = 1.0) -> list[str]:
    """Attach rank-`rank` adapters to every `nn.Linear` whose name ends with one of `targets`.

    `alpha` defaults to `rank` (factor 1). Returns the adapted module names; raises when none matches.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in targets)]
    if not names:
        raise ValueError(f"no linear layer matches the LoRA targets {list(targets)}")
    for name in names:
        m = model.get_submodule(name)
        if hasattr(m, "lora_down"):
            raise ValueError(f"{name} already has a LoRA adapter")
        m.lora_down = nn.Linear(m.in_features, rank, bias=False, device=m.weight.device, dtype=m.weight.dtype)
        m.lora_up = nn.Linear(rank, m.out_features, bias=False, device=m.weight.device, dtype=m.weight.dtype)
        nn.init.kaiming_uniform_(m.lora_down.weight, a=5**0.5)
        nn.init.zeros_(m.lora_up.weight)
        m.lora_rank, m.lora_alpha, m.lora_scale = rank, float(alpha or rank), float(scale)
        m.register_forward_hook(_lora_hook)
    return names


def _adapted(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "lora_down")]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters; every other parameter of `model` is frozen."""
    model.requires_grad_(False)
    params = [p for _, m in _adapted(model) for p in (m.lora_down.weight, m.lora_up.weight)]
    for p in params:
        p.requires_grad_(True)
    return params


def set_lora_scale(model: nn.Module, scale: float) -> None:
    """Strength of every adapter (0: the base model)."""
    for _, m in _adapted(model):
        m.lora_scale = float(scale)


def lora_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter entries of a model state dict."""
    return {k: v for k, v in state.items() if any(s in k for s in LORA_KEYS)}


def save_lora(model_or_state, path: str | os.PathLike, rank: int, alpha: float, targets) -> Path:
    """Write the adapter weights only (safetensors; rank, alpha and targets in its metadata)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    tensors = {k: v.detach().contiguous().cpu() for k, v in lora_state_dict(state).items()}
    if not tensors:
        raise ValueError("the model has no LoRA adapters to save")
    metadata = {"format": "pt", "lora_rank": str(rank), "lora_alpha": str(alpha),
                "lora_targets": json.dumps(list(targets))}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_lora(model: nn.Module, path: str | os.PathLike, scale: float = 1.0) -> list[str]:
    """Attach the adapters saved by :func:`save_lora` to `model` (the same base architecture)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises several types
        raise ValueError(f"{path} is not a readable LoRA safetensors file ({err})") from err
    if "lora_rank" not in meta:
        raise ValueError(f"{path} holds no LoRA metadata (lora_rank); was it written by save_lora?")
    names = add_lora(model, int(meta["lora_rank"]), tuple(json.loads(meta["lora_targets"])),
                     float(meta["lora_alpha"]), scale)
    expected = lora_state_dict(model.state_dict()).keys()
    if set(tensors) != set(expected):
        raise ValueError(f"{path} does not fit this model: {len(set(expected) - set(tensors))} adapter weights "
                         f"missing, {len(set(tensors) - set(expected))} unexpected")
    model.load_state_dict(tensors, strict=False)
    return names


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter (at its current scale) into its linear weight and remove it. In place."""
    for _, m in _adapted(model):
        delta = m.lora_up.weight.float() @ m.lora_down.weight.float() * (m.lora_alpha / m.lora_rank * m.lora_scale)
        m.weight += delta.to(m.weight.dtype)
        for key in [k for k, hook in m._forward_hooks.items() if hook is _lora_hook]:
            del m._forward_hooks[key]
        del m.lora_down, m.lora_up, m.lora_rank, m.lora_alpha, m.lora_scale
    return model
