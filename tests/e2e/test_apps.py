"""The apps: checkpoints, metric logs, resumable training equal to uninterrupted training, generation."""

import json

import pytest
import torch
from safetensors.torch import load_file

from .conftest import load_app


@pytest.mark.slow
def test_train_dit_resume_equals_uninterrupted(tmp_path, tiny_shards, tiny_models):
    app = load_app("train_dit")

    def run(out, steps):
        cfg = app.parse_args(["--data", str(tiny_shards), "--vae", str(tiny_models["vae"]), "--text-encoder",
                              str(tiny_models["text_encoder"]), "--out", str(out), "--steps", str(steps),
                              "--size", "64", "--frames", "5", "--save-every", "2", "--log-every", "1",
                              "--sample-steps", "0", "--batch-size", "2"])
        return app.train(cfg)

    whole = load_file(run(tmp_path / "a", 4) / "model.safetensors")
    run(tmp_path / "b", 2)
    resumed = load_file(run(tmp_path / "b", 4) / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=0, msg=k)
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    ref = [json.loads(x)["loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == ref


@pytest.mark.slow
def test_generate_app_writes_videos(tmp_path, tiny_models):
    from ea_dit import VideoDiT, VideoDiTConfig

    torch.manual_seed(0)
    VideoDiT(VideoDiTConfig.tiny(caption_channels=32)).save_pretrained(tmp_path / "dit")
    app = load_app("generate")
    args = ["--dit", str(tmp_path / "dit"), "--vae", str(tiny_models["vae"]), "--text-encoder",
            str(tiny_models["text_encoder"]), "--prompt", "a red ball", "--prompt", "a blue cube",
            "--frames", "5", "--height", "32", "--width", "64", "--steps", "3", "--out", str(tmp_path / "out")]
    assert app.main(args) == 0
    from ea_vae.video_io import read_video

    mp4s = sorted((tmp_path / "out").glob("*.mp4"))
    assert [p.name for p in mp4s] == ["00-a_red_ball.mp4", "01-a_blue_cube.mp4"]
    assert read_video(mp4s[0])[0].shape == (5, 32, 64, 3)
    assert len(list((tmp_path / "out").glob("*.gif"))) == 2
    # Same seed -> same video; the DiT output depends on the prompt.
    assert app.main(args[:-1] + [str(tmp_path / "again")]) == 0
    a, b = read_video(mp4s[0])[0], read_video(tmp_path / "again" / mp4s[0].name)[0]
    assert (a == b).all()
    bad = [*args[:-1], str(tmp_path / "bad")]
    bad[bad.index("--frames") + 1] = "6"
    assert app.main(bad) == 2


@pytest.mark.slow
def test_train_vae_resume_equals_uninterrupted(tmp_path, tiny_shards):
    app = load_app("train_vae")

    def run(out, steps):
        cfg = app.parse_args(["--data", str(tiny_shards), "--out", str(out), "--steps", str(steps), "--size", "32",
                              "--frames", "5", "--channels", "16,16,32,32", "--disc-start", "1", "--save-every", "2",
                              "--log-every", "1", "--batch-size", "2"])
        return app.train(cfg)

    whole = load_file(run(tmp_path / "a", 4) / "model.safetensors")
    run(tmp_path / "b", 2)
    resumed = load_file(run(tmp_path / "b", 4) / "model.safetensors")
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=0, msg=k)
    # The GAN was on from step 1: its terms are logged, and the reconstructions were written and scored.
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["disc_factor"] == 1.0 for r in rows[1:])
    report = json.loads((tmp_path / "b" / "samples" / "metrics.json").read_text())
    assert 0 < report["psnr"] < 100 and (tmp_path / "b" / "samples" / "recon_0.gif").exists()


@pytest.mark.slow
def test_train_dit_motion_only_changes_only_motion_modules(tmp_path, tiny_shards, tiny_models):
    from ea_dit import VideoDiT, VideoDiTConfig

    torch.manual_seed(1)
    pretrained = VideoDiT(VideoDiTConfig.tiny(caption_channels=32))
    with torch.no_grad():  # stand-in for a trained DiT: its zero-initialised output layers are non-zero
        for name, p in pretrained.named_parameters():
            if "motion_module" not in name and "long_skip" not in name and p.abs().max() == 0:
                p.normal_(0, 0.02)
    pretrained.save_pretrained(tmp_path / "init")
    app = load_app("train_dit")
    cfg = app.parse_args(["--data", str(tiny_shards), "--vae", str(tiny_models["vae"]), "--text-encoder",
                          str(tiny_models["text_encoder"]), "--dit", str(tmp_path / "init"), "--stage", "motion",
                          "--out", str(tmp_path / "run"), "--steps", "2", "--size", "64", "--frames", "5",
                          "--sample-steps", "0", "--ema-decay", "0"])
    final = load_file(app.train(cfg) / "model.safetensors")
    init = load_file(tmp_path / "init" / "model.safetensors")
    changed = {k for k in init if not torch.equal(init[k], final[k])}
    # A fresh DiT has a zero output layer, so motion-only training must start from a trained one.
    with pytest.raises(SystemExit):
        app.parse_args(["--stage", "motion"])
    # the motion stage trains the motion modules and the (new) U-ViT skips, nothing else
    assert changed and all("motion_module" in k or k.startswith("long_skips.") for k in changed), sorted(changed)
    assert any("motion_module" in k and "proj_out" in k for k in changed), sorted(changed)
