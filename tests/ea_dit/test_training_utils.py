"""ea_dit.training: checkpoints (round trip, pruning, damage detection), metric logs, LR schedules, stages."""

import json
import math

import pytest
import torch

from ea_dit import VideoDiT, VideoDiTConfig
from ea_dit.training import (
    CheckpointError,
    MetricsLog,
    check_run_config,
    latest_checkpoint,
    load_checkpoint,
    plot_metrics,
    read_metrics,
    resume,
    save_checkpoint,
)
from ea_dit.training.optim import lr_factor, parse_betas
from ea_dit.training.stages import adapt_latent_channels, trainable_parameters


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_checkpoint_round_trip_and_pruning(tmp_path):
    model, opt = _model_and_opt()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"m": model}, {"o": opt}, {"note": "x"}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000002", "step-0000003"]
    assert latest_checkpoint(tmp_path).name == "step-0000003"
    fresh, fresh_opt = _model_and_opt(seed=1)
    state = load_checkpoint(tmp_path / "step-0000003", {"m": fresh}, {"o": fresh_opt})
    assert state["note"] == "x" and state["step"] == 3 and ".metadata" in state["files"]
    torch.testing.assert_close(fresh.weight, model.weight, rtol=0, atol=0)
    torch.testing.assert_close(fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"],
                               rtol=0, atol=0)
    # An interrupted save (only a temp folder) is never taken for a checkpoint.
    (tmp_path / ".tmp-step-0000009").mkdir()
    (tmp_path / "step-0000010").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-0000003"


@pytest.mark.parametrize("damage", ["truncated_shard", "broken_state", "missing_rng"])
def test_resume_names_damaged_checkpoint_and_falls_back(tmp_path, damage, capsys):
    model, opt = _model_and_opt()
    save_checkpoint(tmp_path, 1, {"m": model}, {"o": opt}, {})
    good = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1)
    save_checkpoint(tmp_path, 2, {"m": model}, {"o": opt}, {})
    ck = tmp_path / "step-0000002"
    if damage == "truncated_shard":
        bad = next(ck.glob("*.distcp"))
        bad.write_bytes(bad.read_bytes()[:40])
    elif damage == "broken_state":
        bad = ck / "state.json"
        bad.write_text(bad.read_text()[:30])
    else:
        bad = ck / "rng-0.pt"
        bad.unlink()
    fresh, fresh_opt = _model_and_opt(seed=3)
    state = resume(tmp_path, {"m": fresh}, {"o": fresh_opt})
    msg = capsys.readouterr().out
    assert state["step"] == 1
    assert str(bad) in msg and "falling back" in msg and "step-0000001" in msg, msg
    torch.testing.assert_close(fresh.weight, good, rtol=0, atol=0)
    # Nothing usable at all: a clear error naming every bad file, not a raw exception.
    (tmp_path / "step-0000001" / "state.json").write_text("{")
    with pytest.raises(CheckpointError, match="state.json"):
        resume(tmp_path, {"m": fresh}, {"o": fresh_opt})


def test_run_config_check(tmp_path):
    check_run_config(tmp_path, {"a": 1}, set())  # no config yet: fine
    (tmp_path / "config.json").write_text(json.dumps({"a": 1, "steps": 5, "t": [1, 2]}))
    check_run_config(tmp_path, {"a": 1, "steps": 9, "t": (1, 2)}, {"steps"})
    with pytest.raises(ValueError, match=r"different configuration \(a: 1 -> 2"):
        check_run_config(tmp_path, {"a": 2, "steps": 5, "t": (1, 2)}, {"steps"})


def test_metrics_log_truncates_on_resume(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl", tensorboard=False)
    for step in range(1, 6):
        log.write(step, loss=1.0 / step)
    log.close()
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # cut off by a kill
    log = MetricsLog(tmp_path / "m.jsonl", resume_step=3, tensorboard=False)
    log.write(4, loss=9.0)
    log.close()
    rows = read_metrics(tmp_path / "m.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["loss"] == 9.0
    png = plot_metrics(tmp_path / "m.jsonl", tmp_path / "m.png")
    assert png.stat().st_size > 1000
    MetricsLog(tmp_path / "off.jsonl", enabled=False).write(1, loss=1.0)  # other ranks: no file
    assert not (tmp_path / "off.jsonl").exists()


def test_metrics_log_writes_tensorboard_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2):
        log.write(step, loss=1.0 / step, lr=1e-4)
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 1.0), (2, 0.5)]
    assert "lr" in events.Tags()["scalars"]


def test_lr_schedule_closed_form():
    assert [lr_factor(s, 4, 100) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(4, 4, 104, "cosine") == 1.0
    assert math.isclose(lr_factor(54, 4, 104, "cosine"), 0.5)
    assert math.isclose(lr_factor(104, 4, 104, "cosine", min_factor=0.1), 0.1)


def test_wsd_schedule_closed_form():
    # warm-up 10 steps, stable until 80 % of the run, then linear to 0 at step 110
    f = [lr_factor(s, 10, 110, "wsd", decay_fraction=0.2) for s in range(111)]
    assert f[0] == 0.1 and f[9] == 1.0
    assert all(v == 1.0 for v in f[10:91])  # progress (s - 10) / 100 <= 0.8
    assert math.isclose(f[100], 0.5) and math.isclose(f[105], 0.25) and f[110] == 0.0
    # a time-limited run passes its elapsed fraction: halfway through the decay by time, whatever the step
    assert math.isclose(lr_factor(20, 10, 10**6, "wsd", decay_fraction=0.2, progress=0.9), 0.5)
    assert math.isclose(lr_factor(20, 10, 10**6, "cosine", progress=0.5), 0.5)
    assert lr_factor(20, 10, 10**6, "wsd", min_factor=0.1, progress=1.5) == 0.1
    with pytest.raises(ValueError, match="decay_fraction"):
        lr_factor(20, 0, 100, "wsd", decay_fraction=0.0)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(20, 0, 100, "step")


def test_parse_betas():
    assert parse_betas("0.9,0.999") == (0.9, 0.999)
    for bad in ("0.9", "0.9,1.0", "a,b", "0.5,0.9,0.99"):
        with pytest.raises(ValueError, match="betas"):
            parse_betas(bad)


def test_adapt_latent_channels_keeps_all_but_patch_and_output_layers():
    torch.manual_seed(0)
    src = VideoDiT(VideoDiTConfig.tiny(in_channels=4))
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    new = adapt_latent_channels(src, 16)
    assert new.config.in_channels == 16 and new.config.out_channels == 32
    old_sd, new_sd = src.state_dict(), new.state_dict()
    for k, v in new_sd.items():
        if k.startswith(("patch_embed.proj.", "final_layer.linear.")):
            assert v.shape != old_sd[k].shape or k.endswith("bias"), k
        else:
            assert torch.equal(v, old_sd[k]), k
    assert new_sd["patch_embed.proj.weight"].shape[1] == 16 and new_sd["final_layer.linear.weight"].abs().max() == 0
    x = torch.randn(1, 16, 1, 8, 8)
    assert new(x, torch.tensor([5]), torch.randn(1, 3, 32)).shape == (1, 32, 1, 8, 8)
    assert adapt_latent_channels(src, 4) is src


def test_stage_parameter_selection():
    model = VideoDiT(VideoDiTConfig.tiny())
    names = {id(p): n for n, p in model.named_parameters()}
    image = {names[id(p)] for p in trainable_parameters(model, "image")}
    assert image and not any(".motion_module." in n for n in image)
    motion = {names[id(p)] for p in trainable_parameters(model, "motion")}
    assert motion and all(".motion_module." in n or n.startswith("long_skips.") for n in motion)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == motion
    assert len(trainable_parameters(model, "full")) == len(list(model.parameters()))
