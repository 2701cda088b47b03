"""Reading what users hand us - weight files, JSON configs, config dataclasses - with errors naming the
file (or key) and the problem.

`load_safetensors` and `load_torch_weights` turn a truncated, empty or foreign file into a
``WeightsFileError`` that says which, instead of the raw ``SafetensorError`` / ``UnpicklingError``;
`check_safetensors_folder` names the broken file of a folder that another library's loader choked on.
`read_json_object` does the same for a JSON config. `check_fields` checks a config dataclass's values
against its type annotations and given ranges.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import types
import typing
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

_MAX_HEADER = 100 * 1024 * 1024  # safetensors refuses headers over 100 MB too


class WeightsFileError(ValueError):
    """A weights or config file exists but cannot be read; the message names it and says why."""


def safetensors_problem(path: str | os.PathLike) -> str:
    """Why `path` does not load as safetensors: "is truncated (...)" or "is not a safetensors file (...)".

    The format is an 8-byte little-endian header length N, N bytes of JSON naming each tensor's byte
    range, then the data; a file shorter than the header or the ranges it declares was cut off.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"is truncated or not a safetensors file (only {size} bytes)"
        n = int.from_bytes(head, "little")
        if n < 2 or n > _MAX_HEADER:
            return "is not a safetensors file (its first 8 bytes are not a header length)"
        first = f.read(1)
        if first != b"{":
            return "is not a safetensors file (no JSON header after the length)"
        if 8 + n > size:
            return f"is truncated ({size} bytes; its header alone needs {8 + n})"
        try:
            header = json.loads(first + f.read(n - 1))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return f"is not a safetensors file (its header is not valid JSON: {e})"
    if not isinstance(header, dict):
        return "is not a safetensors file (its header is not a JSON object)"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets") or ()) == 2]
    need = 8 + n + max(ends, default=0)
    if need > size:
        return f"is truncated ({size} bytes; its header declares {need})"
    return "is not a valid safetensors file"


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """`safetensors.torch.load_file`, but a missing, truncated or foreign file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file does not exist")
    try:
        return load_file(str(path), device=device)
    except Exception as e:  # SafetensorError (not exported in every version) or OSError
        raise WeightsFileError(f"{path}: {safetensors_problem(path)} ({type(e).__name__}: {e})") from None


def load_torch_weights(path: str | os.PathLike) -> Any:
    """`torch.load(weights_only=True)` (never runs pickled code) naming the file when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        size = path.stat().st_size
        what = "is empty (0 bytes)" if size == 0 else "is truncated or not a torch weights file"
        raise WeightsFileError(f"{path}: {what} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict (name -> tensor) from `.safetensors`, else a torch file read with `weights_only=True`
    (a ``{"state_dict": {...}}`` wrapper is unwrapped); every error names the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    state = load_torch_weights(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsFileError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return state


def check_safetensors_folder(folder: str | os.PathLike) -> None:
    """Raise WeightsFileError naming the first `*.safetensors` file in `folder` that does not open
    (for errors raised inside other libraries' loaders, which do not name the file)."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as e:
            raise WeightsFileError(f"{path}: {safetensors_problem(path)} ({type(e).__name__}: {e})") from None


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a JSON file that must hold one object (``{"key": value, ...}``); errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsFileError(f"{path}: not valid JSON, possibly truncated ({e})") from None
    if not isinstance(data, dict):
        raise WeightsFileError(f"{path}: expected a JSON object ({{\"key\": value, ...}}), "
                               f"got a {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- config dataclasses

POSITIVE = (lambda v: v > 0, "> 0")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
FRACTION = (lambda v: 0 <= v <= 1, "a fraction in [0, 1]")

Limit = tuple[Callable[[Any], bool], str]


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "None"
    if origin in (tuple, list):
        if not args:
            return "a list"
        count = f"{len(args)} " if origin is tuple and args[-1] is not Ellipsis else ""
        return f"a list of {count}{_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
            dict: "an object"}.get(hint, getattr(hint, "__name__", str(hint)))


def _matches(hint: Any, value: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(a, value) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        if not isinstance(value, tuple | list):
            return False
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return all(_matches(args[0], v) for v in value) if args else True
        return len(args) == len(value) and all(_matches(a, v) for a, v in zip(args, value))
    if origin is typing.Literal:
        return value in args
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(hint):  # a nested config
        return isinstance(value, hint)
    return True  # anything else (callables, tensors...) is the caller's to check


def check_fields(config: Any, limits: Mapping[str, Limit] | None = None,
                 error: type[Exception] = ValueError) -> None:
    """Check every field of dataclass `config` against its annotation, and those in `limits` against a
    range (``POSITIVE``...; applied to each element of a list). Raises `error` naming the key, what is
    expected and what was given: ``SliceVAEConfig.latent_channels: expected an integer, got 'four'``.
    Fields whose names start with ``_`` are skipped."""
    cls = type(config)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(config):
        if f.name.startswith("_"):
            continue
        value = getattr(config, f.name)
        hint = hints.get(f.name, Any)
        if not _matches(hint, value):
            raise error(f"{cls.__name__}.{f.name}: expected {_describe(hint)}, got {value!r} "
                        f"({type(value).__name__})")
        if limits and f.name in limits and value is not None:
            ok, text = limits[f.name]
            items = value if isinstance(value, tuple | list) else (value,)
            bad = [v for v in items if not isinstance(v, bool) and isinstance(v, int | float) and not ok(v)]
            if bad:
                raise error(f"{cls.__name__}.{f.name}: must be {text}, got {value!r}")
