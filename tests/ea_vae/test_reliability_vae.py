"""Hostile but honest input to the `ea-vae` CLI and the SliceVAE API (issue 13): nothing the user gave is
overwritten, unreadable files and bad configs get one clear message naming them, silent changes are said."""

import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch

from ea_core.files import WeightsFileError, load_safetensors, load_state_dict, read_json_object
from ea_vae import SliceVAE, SliceVAEConfig
from ea_vae.cli import main
from ea_vae.video_io import read_video, write_video


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rel")
    torch.manual_seed(0)
    SliceVAE(SliceVAEConfig.tiny()).save_pretrained(d / "vae")
    rng = np.random.default_rng(0)
    # 10 frames of 47x33: neither 1 + 4k frames nor multiples of 8 (GIF allows odd sizes)
    write_video(d / "odd.gif", rng.integers(0, 256, (10, 33, 47, 3), dtype=np.uint8), fps=8)
    write_video(d / "in.mp4", rng.integers(0, 256, (5, 16, 24, 3), dtype=np.uint8), fps=8)
    return d


def _model(files):
    return ["--model", str(files / "vae"), "--no-progress"]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


# ----------------------------------------------------------------------------- item 1: never overwrite input


def _aliases(files, tmp_path, name):
    """Other names for `files/name`: the same string, another spelling, a symlink, a hard link."""
    src = tmp_path / name
    shutil.copy(files / name, src)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(src)
    os.link(src, tmp_path / "hard")
    return src, [str(src), str(tmp_path / "sub" / ".." / name), str(tmp_path / "link"), str(tmp_path / "hard")]


@pytest.mark.parametrize("command", ["encode", "roundtrip"])
def test_output_that_is_the_input_video_is_refused(files, tmp_path, capsys, command):
    src, aliases = _aliases(files, tmp_path, "in.mp4")
    before = src.read_bytes()
    for out in aliases:  # the links have no video suffix: the same-file check must come first
        assert main([command, str(src), out, *_model(files)]) == 2
        _one_line_error(capsys, "same file as the input", "refusing to overwrite")
        assert src.read_bytes() == before


def test_decode_output_that_is_the_latents_file_is_refused(files, tmp_path, capsys):
    lat = tmp_path / "lat.mp4"  # a latents file that happens to carry a video suffix
    assert main(["encode", str(files / "in.mp4"), str(lat), *_model(files)]) == 0
    capsys.readouterr()
    before = lat.read_bytes()
    (tmp_path / "link.mp4").symlink_to(lat)
    for out in (lat, tmp_path / "link.mp4", tmp_path / "." / "lat.mp4"):
        assert main(["decode", str(lat), str(out), *_model(files)]) == 2
        _one_line_error(capsys, "same file as the input")
    assert lat.read_bytes() == before


def test_output_into_the_model_folder_is_refused(files, tmp_path, capsys):
    model = tmp_path / "vae"
    shutil.copytree(files / "vae", model)
    before = (model / "model.safetensors").read_bytes()
    assert main(["encode", str(files / "in.mp4"), str(model / "model.safetensors"), "--model", str(model)]) == 2
    _one_line_error(capsys, "model.safetensors")
    assert (model / "model.safetensors").read_bytes() == before


# ----------------------------------------------------------------------------- item 4: unreadable weights


def _broken_model(files, tmp_path, how):
    model = tmp_path / "vae"
    shutil.copytree(files / "vae", model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    if how == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif how == "header-cut":
        weights.write_bytes(data[:40])
    elif how == "garbage":
        weights.write_bytes(b"this is not a weights file at all" * 50)
    elif how == "empty":
        weights.write_bytes(b"")
    return model, weights


@pytest.mark.parametrize("how, says", [("truncated", "is truncated"), ("header-cut", "is truncated"),
                                       ("garbage", "not a safetensors file"), ("empty", "is empty")])
def test_broken_weights_name_the_file_and_the_problem(files, tmp_path, capsys, how, says):
    model, weights = _broken_model(files, tmp_path, how)
    capsys.readouterr()
    with pytest.raises(WeightsFileError, match=says) as e:
        SliceVAE.from_pretrained(model)
    assert str(weights) in str(e.value)
    assert main(["roundtrip", str(files / "in.mp4"), str(tmp_path / "o.mp4"), "--model", str(model)]) == 2
    _one_line_error(capsys, str(weights), says)


def test_truncated_diffusers_and_torch_weights_name_the_file(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(WeightsFileError, match="bad.bin: is truncated or not a torch weights file"):
        load_state_dict(tmp_path / "bad.bin")
    good = tmp_path / "good.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.arange(1000.0)}, str(good))
    torch.testing.assert_close(load_safetensors(good)["a"], torch.arange(1000.0))
    good.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(WeightsFileError, match=r"good.safetensors: is truncated \(\d+ bytes; its header declares"):
        load_safetensors(good)


@pytest.mark.parametrize("text, says", [("{\"latent_channels\": 4,", "not valid JSON"),
                                        ("[1, 2, 3]", "expected a JSON object"),
                                        ("\"SliceVAE\"", "expected a JSON object")])
def test_broken_config_json_names_the_file(files, tmp_path, capsys, text, says):
    model = tmp_path / "vae"
    shutil.copytree(files / "vae", model)
    (model / "config.json").write_text(text)
    with pytest.raises(ValueError, match=says) as e:
        SliceVAE.from_pretrained(model)
    assert str(model / "config.json") in str(e.value)
    with pytest.raises(ValueError, match=says):
        read_json_object(model / "config.json")
    assert main(["encode", str(files / "in.mp4"), str(tmp_path / "l.st"), "--model", str(model)]) == 2
    _one_line_error(capsys, "config.json", says)


def test_a_file_given_instead_of_the_model_folder(files, tmp_path, capsys):
    with pytest.raises(NotADirectoryError, match=r"is a file; .* takes the folder .* perhaps") as e:
        SliceVAE.from_pretrained(files / "vae" / "model.safetensors")
    assert str(files / "vae") in str(e.value)
    weights = str(files / "vae" / "model.safetensors")
    assert main(["encode", str(files / "in.mp4"), str(tmp_path / "l.st"), "--model", weights]) == 2
    _one_line_error(capsys, f"{weights} is a file", f"perhaps {files / 'vae'}")


# ----------------------------------------------------------------------------- item 5: configs validated


@pytest.mark.parametrize("key, value, says", [
    ("latent_channels", "four", "latent_channels: expected an integer, got 'four'"),
    ("norm_num_groups", 0, "norm_num_groups: must be > 0, got 0"),
    ("scaling_factor", "x", "scaling_factor: expected a finite number, got 'x'"),
    ("scaling_factor", -1.0, "scaling_factor: must be > 0"),
    ("block_out_channels", [32, "64"], "block_out_channels: expected a list of integers"),
    ("layers_per_block", 1.5, "layers_per_block: expected an integer"),
    ("mid_block_attention_heads", 0, "mid_block_attention_heads: must be > 0"),
    ("act_fn", 3, "act_fn: expected a string"),
    ("norm_eps", float("nan"), "norm_eps: expected a finite number"),
])
def test_config_values_are_checked_naming_the_key(files, tmp_path, key, value, says):
    with pytest.raises(ValueError, match=f"SliceVAEConfig.{says}"):
        SliceVAEConfig.tiny(**{key: value})
    model = tmp_path / "vae"
    shutil.copytree(files / "vae", model)
    cfg = json.loads((model / "config.json").read_text())
    cfg[key] = value
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=says):
        SliceVAE.from_pretrained(model)


def test_misspelled_config_key_gets_the_close_match():
    with pytest.raises(ValueError, match="'latent_chanels': did you mean 'latent_channels'"):
        SliceVAEConfig.from_dict({**SliceVAEConfig.tiny().to_dict(), "latent_chanels": 4})


def test_config_from_a_json_list_is_refused():
    with pytest.raises(ValueError, match="expected a JSON object"):
        SliceVAEConfig.from_dict([["latent_channels", 4]])
    assert SliceVAEConfig.tiny(scaling_factor=1).scaling_factor == 1  # a JSON integer is a number


# ----------------------------------------------------------------------------- empty and non-finite input


def test_empty_batch_and_non_finite_input_get_clear_errors():
    vae = SliceVAE(SliceVAEConfig.tiny()).eval()
    with pytest.raises(ValueError, match="batch size 0"):
        vae.decode(torch.zeros(0, 4, 2, 2, 2))
    with pytest.raises(ValueError, match="batch size 0"):
        vae.encode(torch.zeros(0, 3, 5, 16, 16))
    z = torch.zeros(1, 4, 2, 2, 2)
    z[0, 1, 1, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="latents contains NaN or infinite"):
        vae.decode(z)
    x = torch.zeros(1, 3, 5, 16, 16)
    x[..., 3] = float("inf")
    with pytest.raises(ValueError, match="video contains NaN or infinite"):
        vae.encode(x)


# ----------------------------------------------------------------------------- output paths and changes


@pytest.mark.parametrize("name", ["out", "out.webm", "out.safetensors"])
def test_decode_to_a_path_without_a_video_suffix(files, tmp_path, capsys, name):
    lat = tmp_path / "lat.safetensors"
    assert main(["encode", str(files / "in.mp4"), str(lat), *_model(files)]) == 0
    capsys.readouterr()
    assert main(["decode", str(lat), str(tmp_path / name), *_model(files)]) == 2
    suffix = "no suffix" if "." not in name else f"suffix '.{name.split('.')[1]}'"
    _one_line_error(capsys, str(tmp_path / name), suffix, ".mp4")
    assert not (tmp_path / name).exists()


def test_changes_to_size_and_frame_count_are_said_on_stderr(files, tmp_path, capsys):
    out = tmp_path / "rt.mp4"
    assert main(["roundtrip", str(files / "odd.gif"), str(out), *_model(files)]) == 0
    err = capsys.readouterr().err
    assert "using the first 9 of 10 frames" in err
    assert "40x32 instead of 47x33" in err  # what the model sees
    assert "written at 46x32 instead of 47x33" in err  # what H.264 can store
    assert read_video(out)[0].shape == (9, 32, 46, 3)
    # nothing to say when nothing changes
    assert main(["roundtrip", str(files / "in.mp4"), str(out), *_model(files)]) == 0
    assert "note" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- file modes


def _normal_mode(path):
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, f"{path}: mode {oct(path.stat().st_mode)}"


def test_outputs_have_the_users_normal_mode(files, tmp_path):
    lat, video = tmp_path / "lat.safetensors", tmp_path / "v.mp4"
    assert main(["encode", str(files / "in.mp4"), str(lat), *_model(files)]) == 0
    assert main(["decode", str(lat), str(video), *_model(files)]) == 0
    SliceVAE(SliceVAEConfig.tiny()).save_pretrained(tmp_path / "vae")  # what the trainers' final/ holds
    for path in (lat, video, tmp_path / "vae" / "config.json", tmp_path / "vae" / "model.safetensors"):
        _normal_mode(path)
