"""Resumable training checkpoints: sharded (`torch.distributed.checkpoint`), atomic, verified on resume.

Layout of `<root>/step-NNNNNNN/`:

- `.metadata`, `__<rank>_<n>.distcp`: modules and optimizer states written by DCP. Under FSDP each
  process writes its own shards; replicated tensors (one process, DDP) are written once. DCP reshards
  on load, so a checkpoint resumes on any number of processes.
- `rng-<rank>.pt`: each process's torch / python RNG states (loaded with `weights_only=True`).
- `state.json`: the step, the caller's JSON state (data position per rank, config, ...) and the size
  of every file above. It is written last.

A checkpoint is assembled under `.tmp-step-NNNNNNN` and renamed when complete, so a job killed while
saving leaves only the temporary folder, which is never taken for a checkpoint. On resume each
candidate is verified (state.json readable, every listed file present at its recorded size) and
loaded; a damaged one is reported by file name and the next older complete one is used instead.
Without a process group everything runs in the one process.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ea_core.atomic import atomic_write_text

STATE_NAME = "state.json"


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete or damaged; the message names the file and the problem."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def step_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"step-{step:07d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """`step-*` folders under `root` that have a state.json, oldest first (not yet verified)."""
    root = Path(root)
    return sorted(p for p in root.glob("step-*") if p.is_dir() and (p / STATE_NAME).exists())


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest `step-*` folder with a state.json, or None (see :func:`verify_checkpoint`)."""
    done = list_checkpoints(root)
    return done[-1] if done else None


def read_state(path: str | os.PathLike) -> dict:
    """The JSON state of checkpoint folder `path`; CheckpointError naming the file if unreadable."""
    file = Path(path) / STATE_NAME
    try:
        state = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file} is not readable JSON ({err})") from err
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{file} holds no training state (no integer 'step')")
    return state


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """Check that `path` is complete: state.json readable and every file it lists at its recorded size.

    Returns the state; raises :class:`CheckpointError` naming the first bad file.
    """
    path = Path(path)
    state = read_state(path)
    files = state.get("files")
    if not isinstance(files, dict) or ".metadata" not in files:
        raise CheckpointError(f"{path / STATE_NAME} lists no checkpoint files: not written by this version")
    for name, size in sorted(files.items()):
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f} is missing")
        actual = f.stat().st_size
        if actual != size:
            raise CheckpointError(f"{f} is truncated or damaged: {actual} bytes, {size} expected")
    return state


def _container(modules: dict[str, nn.Module]) -> nn.Module:
    container = nn.Module()  # a view: registering does not move or copy the modules
    for name, module in modules.items():
        container.add_module(name, module)
    return container


def _state_dicts(modules, optimizers) -> tuple[nn.Module, dict]:
    container = _container(modules)
    sd = {"model": get_model_state_dict(container)}
    if optimizers:
        sd["optim"] = get_optimizer_state_dict(container, list(optimizers.values()))
    return container, sd


def save_checkpoint(root: str | os.PathLike, step: int, modules: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], state: dict, keep: int = 2) -> Path:
    """Write modules, optimizer states, RNG states and the JSON `state` into `root/step-N`, atomically.

    Every process calls this (collective under torch.distributed). `modules` may be plain, DDP-owned
    or FSDP2-sharded modules (pass the module itself, not the DDP wrapper). Only the newest `keep`
    checkpoints are kept. Returns the checkpoint folder.
    """
    root = Path(root)
    final, tmp = step_dir(root, step), root / f".tmp-step-{step:07d}"
    rank = _rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    _, sd = _state_dicts(modules, optimizers)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        dcp.save(sd, checkpoint_id=tmp)
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / f"rng-{rank}.pt")
    _barrier()
    if rank == 0:
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        _write_state(tmp, {**state, "step": step, "files": files})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _write_state(folder: Path, state: dict) -> None:
    atomic_write_text(folder / STATE_NAME, json.dumps(state, indent=1, default=str))


def load_checkpoint(path: str | os.PathLike, modules: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Verify and restore a checkpoint written by :func:`save_checkpoint`; returns its JSON state.

    Raises :class:`CheckpointError` naming the damaged file (or the folder, when the damage is found
    only while reading the shards).
    """
    path = Path(path)
    state = verify_checkpoint(path)
    container, sd = _state_dicts(modules, optimizers)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            dcp.load(sd, checkpoint_id=path)
    except Exception as err:  # noqa: BLE001 - DCP wraps reader errors in several types
        raise CheckpointError(f"{path}: the sharded weights could not be read ({type(err).__name__}: "
                              f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''})") from err
    set_model_state_dict(container, sd["model"])
    if optimizers:
        set_optimizer_state_dict(container, list(optimizers.values()), sd["optim"])
    rank = _rank()
    rng_file = path / f"rng-{rank}.pt"
    if not rng_file.is_file():  # resumed on more processes than saved: share rank 0's
        rng_file = path / "rng-0.pt"
    try:
        rng = torch.load(rng_file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{rng_file} is not a readable RNG state ({err})") from err
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


def resume(root: str | os.PathLike, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
           log=print) -> dict | None:
    """Restore the newest complete checkpoint under `root`; None when there is none.

    A damaged checkpoint is reported through `log` with the bad file's name, and the next older one
    is tried; the returned state holds `step` and whatever the trainer saved. Raises
    :class:`CheckpointError` when checkpoints exist but none is usable.
    """
    candidates = list_checkpoints(root)[::-1]
    problems = []
    for ck in candidates:
        try:
            state = load_checkpoint(ck, modules, optimizers)
        except CheckpointError as err:
            problems.append(str(err))
            if _rank() == 0:
                log(f"resume: skipping damaged checkpoint {ck.name}: {err}")
            continue
        if problems and _rank() == 0:
            log(f"resume: falling back to the newest complete checkpoint {ck} (step {state['step']})")
        elif _rank() == 0:
            log(f"resumed from {ck} at step {state['step']}")
        return state
    if problems:
        raise CheckpointError("no usable checkpoint under " + str(root) + ":\n  " + "\n  ".join(problems))
    return None


# ------------------------------------------------------------------------------------------------
# the run folder's configuration
# ------------------------------------------------------------------------------------------------


def check_run_config(out: str | os.PathLike, config: dict, may_change: set[str] | frozenset[str]) -> None:
    """Refuse to reuse run folder `out` for a different configuration (reads only; writes nothing).

    `out/config.json`, when present, must agree with `config` on every key not in `may_change`
    (e.g. `steps`, logging intervals, the device). Raises ValueError naming the differing keys.
    """
    file = Path(out) / "config.json"
    if not file.exists():
        return
    try:
        old = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file} is not readable JSON ({err}); use a new --out or remove the file") from err
    new = json.loads(json.dumps(config, default=str))  # tuples -> lists, as stored
    diff = sorted(k for k in set(old) | set(new) if k not in may_change and old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
        raise ValueError(f"--out {out} was used by a different configuration ({shown}"
                         f"{', ...' if len(diff) > 6 else ''}); resume with the same settings or choose a "
                         "new --out")


def write_run_config(out: str | os.PathLike, config: dict) -> Path:
    """Write `out/config.json` atomically (call after resume has decided)."""
    return atomic_write_text(Path(out) / "config.json", json.dumps(config, indent=1, default=str))
