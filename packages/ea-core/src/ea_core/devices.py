"""Device and dtype names as users type them (`--device auto`, `--dtype bf16`): the one table and the one
"auto" rule of every package and app."""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "resolve_device", "resolve_dtype"]

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """`"auto"` (or None): the first CUDA GPU when there is one, else the CPU. Any other torch device name
    is checked: a bad name or CUDA asked for on a machine without it raises ValueError saying so."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device {name!r} is not a torch device (try cpu, cuda, cuda:1 or auto)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def resolve_dtype(name: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """A name from `DTYPES`, or `"auto"`: bfloat16 on GPUs that support it, float16 on other GPUs, float32 on
    the CPU (or when `device` is not given)."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        if device is not None and device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose auto or one of {sorted(DTYPES)}")
    return DTYPES[name]
