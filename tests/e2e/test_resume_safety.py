"""Resume after damage (issue 13 item 3): a corrupt newest checkpoint is named and skipped, the run
continues from the newest complete one exactly, nothing is written before resume decides, and a kill in
the middle of writing a checkpoint loses only that checkpoint."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import load_app

RUN_APP = Path(__file__).with_name("run_app.py")


def _dit_args(tiny_shards, tiny_models, out, steps=2):
    return ["--data", str(tiny_shards), "--vae", str(tiny_models["vae"]), "--text-encoder",
            str(tiny_models["text_encoder"]), "--out", str(out), "--steps", str(steps), "--size", "32",
            "--frames", "5", "--save-every", "1", "--log-every", "1", "--sample-steps", "0", "--batch-size", "2",
            "--no-tensorboard"]


def _vae_args(tiny_shards, out, steps=2):
    return ["--data", str(tiny_shards), "--out", str(out), "--steps", str(steps), "--size", "32", "--frames", "5",
            "--channels", "16,16,32,32", "--disc-start", "1", "--save-every", "1", "--log-every", "1",
            "--batch-size", "2", "--no-tensorboard"]


def _same_weights(a: Path, b: Path):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["train_dit", "train_vae"])
def test_resume_from_corrupt_checkpoint_falls_back_and_writes_nothing_first(tmp_path, tiny_shards, tiny_models,
                                                                           trainer, capsys):
    app = load_app(trainer)
    args = (lambda out: _dit_args(tiny_shards, tiny_models, out)) if trainer == "train_dit" else \
        (lambda out: _vae_args(tiny_shards, out))
    out = tmp_path / "run"
    assert app.main(args(out)) == 0
    shutil.copytree(out / "final", tmp_path / "whole")
    ck = out / "checkpoints" / "step-0000002"
    if trainer == "train_dit":  # a truncated weight shard
        bad = next(ck.glob("*.distcp"))
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    else:  # a broken state.json
        bad = ck / "state.json"
        bad.write_text(bad.read_text()[:50])
    config_before = (out / "config.json").read_bytes()
    metrics_before = (out / "metrics.jsonl").read_bytes()

    # A different configuration in the same --out is refused before anything is written.
    changed = args(out)
    changed += ["--lr", "0.5"]
    capsys.readouterr()
    assert app.main(changed) == 2
    assert "different configuration" in capsys.readouterr().err
    assert (out / "config.json").read_bytes() == config_before
    assert (out / "metrics.jsonl").read_bytes() == metrics_before

    # Same configuration: the damaged step 2 is named and skipped; step 1 is resumed and step 2 redone.
    shutil.rmtree(out / "final")
    assert app.main(args(out)) == 0
    said = capsys.readouterr().out
    assert str(bad) in said and "falling back" in said and "step-0000001" in said, said
    _same_weights(tmp_path / "whole", out / "final")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]


@pytest.mark.slow
def test_kill_while_writing_a_checkpoint(tmp_path, tiny_shards, tiny_models):
    """SIGKILL between the shards and state.json of step 2: the restart resumes step 1 and ends exact."""
    app = load_app("train_dit")
    assert app.main(_dit_args(tiny_shards, tiny_models, tmp_path / "whole")) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, str(RUN_APP), "train_dit", "--kill", "in_save:2", "--",
           *_dit_args(tiny_shards, tiny_models, out)]
    killed = subprocess.run(cmd, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    ckdir = out / "checkpoints"
    assert (ckdir / ".tmp-step-0000002").is_dir() and not (ckdir / "step-0000002").exists()
    assert app.main(_dit_args(tiny_shards, tiny_models, out)) == 0
    _same_weights(tmp_path / "whole" / "final", out / "final")
    assert not (ckdir / ".tmp-step-0000002").exists() or (ckdir / "step-0000002").is_dir()
