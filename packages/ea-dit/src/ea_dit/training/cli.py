"""A trainer's command line and run set-up: one `--flag` per field of its config dataclass, then joining
torchrun's process group and checking that `--out` belongs to this configuration."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from ea_dit.training.checkpoint import CheckpointError, check_run_config
from ea_dit.training.distributed import DistContext, close_distributed, init_distributed

__all__ = ["parse_config", "run_trainer", "start_run"]


def parse_config(cls, argv, prog: str, doc: str, helps: dict[str, str] | None = None,
                 choices: dict[str, tuple] | None = None):
    """Parse command-line flags into the dataclass `cls`: one `--field-name` flag per field.

    bool fields get `--x/--no-x`; `tuple[str, ...]` fields a repeatable flag; `choices` restricts values;
    `helps` gives each flag's help text (default: the field's default value).
    """
    helps, choices = helps or {}, choices or {}
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        name = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, f"default: {f.default}")
        if f.type == "bool":
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default, help=text)
        elif f.type.startswith("tuple"):
            p.add_argument(name, action="append", default=[], help=text + " (repeatable)")
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            p.add_argument(name, type=kind, default=f.default, choices=choices.get(f.name), help=text)
    values = vars(p.parse_args(argv))
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def start_run(cfg, may_change: frozenset[str] | set[str]) -> tuple[DistContext, Path]:
    """Join torchrun's process group (when launched by it), seed, and check that `cfg.out` is not the run
    folder of a different configuration (only the fields in `may_change` may differ on resumption).
    Writes nothing: the trainer writes `config.json` once resume has decided. Returns `(ctx, out folder)`.
    """
    ctx = init_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    check_run_config(out, dataclasses.asdict(cfg), may_change)
    return ctx, out


def run_trainer(train, cfg, must_exist: dict[str, str], hint: str = "") -> int:
    """A trainer's `main`: check that each `--flag` path in `must_exist` (flag -> path) exists, run
    `train(cfg)`, and turn a configuration or checkpoint problem into `error: ...` on stderr and exit
    status 2 (not a traceback); the process group is closed however training ends. Returns the exit status.
    """
    for flag, path in must_exist.items():
        if not Path(path).exists():
            print(f"error: {flag} {path} does not exist{hint}", file=sys.stderr)
            return 2
    try:
        train(cfg)
    except (ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        close_distributed()
    return 0
