"""The `ea-vae` CLI on a tiny random model: encode / decode / roundtrip files, bad input -> exit 2."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from ea_vae import SliceVAE, SliceVAEConfig
from ea_vae.cli import load_latents, main, target_size
from ea_vae.video_io import frames_to_tensor, read_video, write_video


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    SliceVAE(SliceVAEConfig.tiny()).save_pretrained(d / "vae")
    rng = np.random.default_rng(0)
    # 11 frames (trimmed to 9 = 1 + 4k), 48x32 (already multiples of 8): a moving gradient plus noise
    y, x = np.mgrid[0:32, 0:48]
    frames = np.stack([(np.stack([x * 4 + 10 * t, y * 6, np.full_like(x, 120)], -1) % 256) for t in range(11)])
    frames = np.clip(frames + rng.integers(-8, 8, frames.shape), 0, 255).astype(np.uint8)
    write_video(d / "in.mp4", frames, fps=8)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(2000))
    (d / "empty.mp4").write_bytes(b"")
    return d


def test_encode_stores_the_models_latents_and_metadata(files, tmp_path):
    out = tmp_path / "lat.safetensors"
    assert main(["encode", str(files / "in.mp4"), str(out), "--model", str(files / "vae"), "--no-progress"]) == 0
    latents, meta = load_latents(out)
    assert latents.shape == (1, 4, 3, 4, 6)  # 9 frames of 32x48 -> 3 latents of 4x6
    assert meta["fps"] == 8.0 and meta["num_frames"] == 9 and meta["source_frames"] == 11
    assert (meta["original_width"], meta["original_height"]) == (48, 32)
    assert meta["model_config"]["latent_channels"] == 4 and meta["model_config"]["block_out_channels"] == [32, 32, 64, 64]

    # the same latents as calling the model on the decoded file's first 9 frames (unsliced, no CLI)
    vae = SliceVAE.from_pretrained(files / "vae")
    video = frames_to_tensor(read_video(files / "in.mp4")[0][:9])[None]
    with torch.no_grad():
        expected = vae.encode(video).mode()
    torch.testing.assert_close(latents, expected, rtol=1e-4, atol=1e-4)


def test_decode_writes_video_of_the_original_size(files, tmp_path, capsys):
    lat = tmp_path / "lat.safetensors"
    out = tmp_path / "out.mp4"
    model = ["--model", str(files / "vae")]
    assert main(["encode", str(files / "in.mp4"), str(lat), *model, "--size", "32x16", "--max-frames", "6"]) == 0
    latents, meta = load_latents(lat)
    assert latents.shape == (1, 4, 2, 2, 4)  # 6 frames -> 5 = 1 + 4; resized to 32x16
    assert main(["decode", str(lat), str(out), *model, "--decode-latents", "2", "--scheme", "shared"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 48, 3) and fps == pytest.approx(8.0)  # original size restored
    assert main(["decode", str(lat), str(out), *model, "--keep-size", "--tile", "--tile-size", "16"]) == 0
    assert read_video(out)[0].shape == (5, 16, 32, 3)
    assert "decode" in capsys.readouterr().err  # the progress bar went to stderr


def test_roundtrip_prints_psnr_ssim(files, tmp_path, capsys):
    out = tmp_path / "rt.mp4"
    assert main(["roundtrip", str(files / "in.mp4"), str(out), "--model", str(files / "vae"), "--no-progress"]) == 0
    line = capsys.readouterr().out
    assert "PSNR" in line and "dB" in line and "SSIM" in line
    assert read_video(out)[0].shape == (9, 32, 48, 3)


@pytest.mark.parametrize("name", ["corrupt.mp4", "empty.mp4", "missing.mp4"])
def test_unreadable_video_exits_2_naming_the_file(files, tmp_path, capsys, name):
    for cmd in (["encode", str(files / name), str(tmp_path / "x.safetensors")],
                ["roundtrip", str(files / name), str(tmp_path / "x.mp4")]):
        assert main([*cmd, "--model", str(files / "vae")]) == 2
        err = capsys.readouterr().err
        assert name in err and "error" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.mp4").exists()


def test_bad_latents_and_model_exit_2(files, tmp_path, capsys):
    model = ["--model", str(files / "vae")]
    assert main(["decode", str(files / "in.mp4"), str(tmp_path / "o.mp4"), *model]) == 2
    assert "in.mp4" in capsys.readouterr().err
    from safetensors.torch import save_file

    save_file({"latents": torch.zeros(1, 16, 2, 2, 2)}, str(tmp_path / "wrong.safetensors"))
    assert main(["decode", str(tmp_path / "wrong.safetensors"), str(tmp_path / "o.mp4"), *model]) == 2
    assert "16 channels" in capsys.readouterr().err
    assert main(["encode", str(files / "in.mp4"), str(tmp_path / "l.safetensors"), "--model",
                 str(tmp_path / "no_model")]) == 2
    assert "no_model" in capsys.readouterr().err
    assert main(["encode", str(files / "in.mp4"), str(tmp_path / "l.safetensors"), *model, "--slice-frames", "3"]) == 2
    assert "--slice-frames 3" in capsys.readouterr().err


def test_target_size_rounds_down_to_multiples_of_8():
    assert target_size(50, 36, None) == (48, 32)
    assert target_size(640, 360, 180) == (320, 176)  # shorter side 180 -> 176 after rounding
    assert target_size(100, 100, (70, 41)) == (64, 40)


def test_console_script_help():
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    proc = subprocess.run([uv, "run", "ea-vae", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("encode", "decode", "roundtrip"):
        assert command in proc.stdout


def test_latents_metadata_is_json(files, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "lat.safetensors"
    assert main(["encode", str(files / "in.mp4"), str(out), "--model", str(files / "vae"), "--no-progress",
                 "--sample", "--seed", "3"]) == 0
    with safe_open(str(out), "pt") as f:
        header = f.metadata()
    assert header["format"].startswith("ea-vae-latents")
    assert json.loads(header["sampled"]) is True
    assert json.loads(header["model_config"])["scaling_factor"] == pytest.approx(0.7125)
