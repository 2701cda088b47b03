"""torchrun on the CPU (gloo): 2 processes train what 1 process trains with the same global batch (DDP and
FSDP2), a 2-process checkpoint resumes on 1 process, and a killed 2-process run restarts where it stopped.

Every sample of the test shards is the same clip with the same caption, so any split of the data over
processes gives the same batches; what may differ is only the distributed arithmetic under test
(gradient averaging, sharding, per-sample noise seeds, checkpoint resharding).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ea_data.batches import video_loader

from .conftest import load_app

RUN_APP = Path(__file__).with_name("run_app.py")


@pytest.fixture(scope="module")
def same_clip_shards(tmp_path_factory):
    import webdataset as wds

    from ea_vae.video_io import write_video

    root = tmp_path_factory.mktemp("same_clip")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:32, :32]
    frames = np.stack([np.stack([(x + 3 * t) * 7 % 256, y * 8 % 256, (x + y) * 4 % 256], -1) for t in range(5)])
    frames = (frames + rng.integers(0, 20, frames.shape)).clip(0, 255).astype(np.uint8)
    clip = write_video(root / "clip.mp4", frames, fps=8).read_bytes()
    meta = json.dumps({"caption": "a striped square drifts right", "type": "video", "fps": 8, "num_frames": 5,
                       "width": 32, "height": 32}).encode()
    shards = root / "shards"
    shards.mkdir()
    for s in range(2):
        with wds.TarWriter(str(shards / f"shard-{s:06d}.tar")) as w:
            for i in range(2):
                w.write({"__key__": f"s{s}c{i}", "mp4": clip, "json": meta})
    return shards


def _args(shards, models, out, steps, batch, save_every=2, parallel="ddp", *extra):
    return ["--data", str(shards), "--vae", str(models["vae"]), "--text-encoder", str(models["text_encoder"]),
            "--out", str(out), "--steps", str(steps), "--batch-size", str(batch), "--size", "32", "--frames", "5",
            "--frame-stride", "1", "--image-video-ratio", "0", "--save-every", str(save_every), "--log-every", "1",
            "--sample-steps", "0", "--parallel", parallel, "--no-tensorboard", "--lr", "1e-3", *extra]


def _torchrun(args, kill="", app="train_dit"):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(RUN_APP),
           app, *(["--kill", kill] if kill else []), "--", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _losses(out, key="loss"):
    rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows], [r[key] for r in rows]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, same_clip_shards, tiny_models):
    """Reference: one process, global batch 4, 4 steps."""
    out = tmp_path_factory.mktemp("one") / "run"
    assert load_app("train_dit").main(_args(same_clip_shards, tiny_models, out, 4, 4)) == 0
    steps, losses = _losses(out)
    assert steps == [1, 2, 3, 4]
    return out, losses


def _same_final(a, b):
    from ea_dit import VideoDiT

    ref = VideoDiT.from_pretrained(a / "final").state_dict()
    got = VideoDiT.from_pretrained(b / "final").state_dict()  # a plain from_pretrained folder
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-3, atol=1e-4, msg=k)


@pytest.mark.slow
def test_ddp_two_processes_match_one_and_restart_after_kill(tmp_path, same_clip_shards, tiny_models, one_process):
    """DDP, 2 x 2: rank 1 is killed right after the step-2 checkpoint; the restart continues from it."""
    ddp = tmp_path / "ddp"
    killed = _torchrun(_args(same_clip_shards, tiny_models, ddp, 4, 2), kill="after_save:2:1")
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert _losses(ddp)[0] == [1, 2] and not (ddp / "final").exists()
    done = _torchrun(_args(same_clip_shards, tiny_models, ddp, 4, 2))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout and "step-0000002" in done.stdout, done.stdout[-2000:]
    steps, losses = _losses(ddp)
    assert steps == [1, 2, 3, 4]
    np.testing.assert_allclose(losses, one_process[1], rtol=1e-4, atol=1e-6)
    _same_final(one_process[0], ddp)


@pytest.mark.slow
def test_fsdp_two_processes_match_one_and_resume_on_one(tmp_path, same_clip_shards, tiny_models, one_process,
                                                        capsys):
    """FSDP2 with activation checkpointing, 2 x 2 for two steps; then the sharded checkpoint resumes on one
    process (batch 4). Recomputation is deterministic, so the losses still match the reference."""
    fsdp = tmp_path / "fsdp"
    run = _torchrun(_args(same_clip_shards, tiny_models, fsdp, 2, 2, 2, "fsdp", "--gradient-checkpointing"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(list((fsdp / "checkpoints" / "step-0000002").glob("*.distcp"))) == 2  # one shard file per process
    capsys.readouterr()
    assert load_app("train_dit").main(_args(same_clip_shards, tiny_models, fsdp, 4, 4, 2, "fsdp")) == 0
    assert "saved on 2 process(es), now 1" in capsys.readouterr().out
    steps, losses = _losses(fsdp)
    assert steps == [1, 2, 3, 4]
    np.testing.assert_allclose(losses, one_process[1], rtol=1e-4, atol=1e-6)
    _same_final(one_process[0], fsdp)


@pytest.mark.slow
def test_gradient_accumulation_matches_the_larger_batch(tmp_path, same_clip_shards, tiny_models, one_process):
    """One process, 2 micro-batches of 2 per step == one batch of 4 (noise seeded by global sample index)."""
    out = tmp_path / "accum"
    assert load_app("train_dit").main(_args(same_clip_shards, tiny_models, out, 2, 2, 2, "ddp", "--grad-accum", "2")) == 0
    steps, losses = _losses(out)
    assert steps == [1, 2]
    np.testing.assert_allclose(losses, one_process[1][:2], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_train_vae_two_processes_match_one(tmp_path, same_clip_shards, parallel):
    """train_vae under torchrun: gradients averaged over 2 processes x batch 1 == 1 process x batch 2, with
    the VAE replicated (ddp) or sharded per block (FSDP2)."""
    from safetensors.torch import load_file

    def args(out, batch, *extra):
        return ["--data", str(same_clip_shards), "--out", str(out), "--steps", "2", "--batch-size", str(batch),
                "--size", "32", "--frames", "5", "--image-video-ratio", "0", "--channels", "8,8,16,16",
                "--save-every", "2", "--log-every", "1", "--no-tensorboard", "--lr", "1e-3", *extra]

    assert load_app("train_vae").main(args(tmp_path / "one", 2)) == 0
    run = _torchrun(args(tmp_path / "two", 1, "--parallel", parallel), app="train_vae")
    assert run.returncode == 0, run.stderr[-3000:]
    (s1, l1), (s2, l2) = _losses(tmp_path / "one", "total_loss"), _losses(tmp_path / "two", "total_loss")
    assert s1 == s2 == [1, 2]
    np.testing.assert_allclose(l2, l1, rtol=1e-4, atol=1e-6)
    a, b = (load_file(tmp_path / x / "final" / "model.safetensors") for x in ("one", "two"))
    assert a.keys() == b.keys()  # final/ is a whole, plain SliceVAE folder
    # Adam divides by sqrt(v): where a gradient is tiny, the rounding of another reduction order changes
    # the update noticeably (the losses above are the sharp check); every weight stays within 2 updates of lr.
    for k in a:
        assert (b[k] - a[k]).abs().max() <= 2 * 1e-3 + 1e-6, k
    if parallel == "fsdp":
        # the 2-process sharded checkpoint resumes on 1 process
        more = args(tmp_path / "two", 1, "--parallel", parallel)
        more[more.index("--steps") + 1] = "3"
        assert load_app("train_vae").main(more) == 0
        assert _losses(tmp_path / "two", "total_loss")[0] == [1, 2, 3]
        # with the GAN on, the adaptive weight differentiates w.r.t. the (unsharded) last decoder layer
        gan = _torchrun(args(tmp_path / "gan", 1, "--parallel", parallel, "--disc-start", "1"), app="train_vae")
        assert gan.returncode == 0, gan.stderr[-3000:]
        rows = [json.loads(x) for x in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
        assert np.isfinite(rows[-1]["d_weight"]) and rows[-1]["d_weight"] > 0 and "disc_loss" in rows[-1], rows[-1]


def test_more_processes_than_shards_is_a_clear_error(same_clip_shards):
    with pytest.raises(ValueError, match=r"2 shard\(s\) for 3 process\(es\)"):
        video_loader(same_clip_shards, batch_size=1, frames=5, stride=1, size=32, image_video_ratio=None,
                            seed=0, num_workers=0, rank=0, world_size=3)
