"""Hostile but honest input to VideoDiT, its config and the T5 text encoder (issue 13): bad configs and
unreadable files get one clear message naming the key or file; typos are caught, not ignored."""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings

import pytest
import torch

from ea_core.files import WeightsFileError
from ea_dit import T5TextEncoder, VideoDiT, VideoDiTConfig

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dit") / "dit"
    VideoDiT(VideoDiTConfig.tiny(depth=2)).save_pretrained(path)
    return path


@pytest.fixture
def copy(saved, tmp_path):
    shutil.copytree(saved, tmp_path / "dit")
    return tmp_path / "dit"


# ----------------------------------------------------------------------------- item 5: config values


@pytest.mark.parametrize("key, value, says", [
    ("num_heads", 0, "num_heads: must be > 0, got 0"),
    ("hidden_size", "64", "hidden_size: expected an integer, got '64'"),
    ("motion_norm_groups", 0, "motion_norm_groups: must be > 0"),
    ("patch_size", -2, "patch_size: must be > 0"),
    ("mlp_ratio", "x", "mlp_ratio: expected a finite number, got 'x'"),
    ("motion_module", "yes", "motion_module: expected true or false"),
    ("motion_module_positions", [0, -1], "motion_module_positions: must be >= 0"),
    ("motion_module_positions", [0, "1"], "motion_module_positions: expected a list of integers or None"),
    ("attention_backend", 1, "attention_backend: expected a string"),
])
def test_config_values_are_checked_naming_the_key(copy, key, value, says):
    with pytest.raises(ValueError, match=f"VideoDiTConfig.{says}"):
        VideoDiTConfig.tiny(**{key: value})
    cfg = json.loads((copy / "config.json").read_text())
    cfg[key] = value
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=says) as e:
        VideoDiT.from_pretrained(copy)
    assert str(copy / "config.json") in str(e.value)


def test_config_json_list_or_garbage_names_the_file(copy):
    with pytest.raises(ValueError, match="expected a JSON object"):
        VideoDiTConfig.from_dict([["depth", 2]])
    for text, says in (("[1, 2]", "expected a JSON object"), ('{"depth": 2', "not valid JSON")):
        (copy / "config.json").write_text(text)
        with pytest.raises(ValueError, match=says) as e:
            VideoDiT.from_pretrained(copy)
        assert str(copy / "config.json") in str(e.value)


# ----------------------------------------------------------------------------- item 6: unknown keys


def test_misspelled_override_is_rejected_with_the_close_match(saved):
    with pytest.raises(TypeError, match="'motion_modul'; did you mean 'motion_module'"):
        VideoDiT.from_pretrained(saved, motion_modul=False)
    with pytest.raises(TypeError, match="'atention_backend'; did you mean 'attention_backend'"):
        VideoDiT.from_pretrained(saved, atention_backend="sdpa")
    assert VideoDiT.from_pretrained(saved, gradient_checkpointing=True).config.gradient_checkpointing


def test_unknown_keys_in_the_file_warn_with_their_names(copy):
    cfg = json.loads((copy / "config.json").read_text())
    cfg["motion_modul"] = False
    cfg["made_up_key"] = 3
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match=r"config.json: ignoring keys .*'made_up_key'.*'motion_modul' "
                                         r"\(did you mean 'motion_module'\?\)"):
        model = VideoDiT.from_pretrained(copy)
    assert model.blocks[0].motion_module is not None
    cfg.pop("motion_modul")
    cfg.pop("made_up_key")
    (copy / "config.json").write_text(json.dumps(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VideoDiT.from_pretrained(copy)  # a clean file does not warn


# ----------------------------------------------------------------------------- item 4: unreadable weights


@pytest.mark.parametrize("how, says", [("truncated", "is truncated"), ("garbage", "not a safetensors file"),
                                       ("empty", "is empty")])
def test_broken_weights_name_the_file_and_the_problem(copy, how, says):
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) - 100], "garbage": b"\x89PNG not weights" * 30,
                         "empty": b""}[how])
    with pytest.raises(WeightsFileError, match=says) as e:
        VideoDiT.from_pretrained(copy)
    assert str(weights) in str(e.value)


def test_saved_files_have_the_users_normal_mode(saved):
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((saved / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_file_given_instead_of_the_folder(saved):
    with pytest.raises(NotADirectoryError, match=r"is a file; .* perhaps"):
        VideoDiT.from_pretrained(saved / "model.safetensors")


# ----------------------------------------------------------------------------- empty and non-finite input


def test_zero_frames_and_non_finite_input_get_clear_errors():
    model = VideoDiT(VideoDiTConfig.tiny(depth=2)).eval()
    text = torch.randn(1, 5, 32)
    with pytest.raises(ValueError, match="at least one video, one frame"):
        model(torch.randn(1, 4, 0, 8, 8), 10, text)
    with pytest.raises(ValueError, match="at least one video, one frame"):
        model(torch.randn(0, 4, 2, 8, 8), 10, text[:0])
    x = torch.randn(1, 4, 2, 8, 8)
    x[0, 0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="latents contains NaN or infinite"):
        model(x, 10, text)
    bad_text = text.clone()
    bad_text[0, 4, 0] = float("inf")
    with pytest.raises(ValueError, match="text_embeds contains NaN or infinite"):
        model(x.nan_to_num(), 10, bad_text)


# ----------------------------------------------------------------------------- items 8, 9: text encoder


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    torch.manual_seed(0)
    runs = tmp_path_factory.mktemp("t5") / "runs"
    config = transformers.T5Config(vocab_size=384, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    transformers.T5EncoderModel(config).save_pretrained(runs / "text_encoder")
    transformers.ByT5Tokenizer().save_pretrained(runs / "text_encoder")
    return runs / "text_encoder"


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything asks transformers to load (i.e. possibly download) a model."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"transformers was asked to load {args} {kwargs}")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.T5EncoderModel, "from_pretrained", refuse)


def test_mistyped_local_path_fails_at_once(t5_folder, monkeypatch, no_hub):
    monkeypatch.chdir(t5_folder.parent.parent)
    with pytest.raises(FileNotFoundError, match="'runs/text_encodr' does not exist; did you mean 'runs/text_encoder'"):
        T5TextEncoder.from_pretrained("runs/text_encodr")
    for path in ("./text_encoder", "runs/deeper/text_encoder", str(t5_folder.parent / "nope")):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            T5TextEncoder.from_pretrained(path)


def test_offline_hub_id_never_retries(monkeypatch):
    calls = []

    def record(name, *args, **kwargs):
        calls.append(kwargs)
        raise OSError(f"{name} is not in the cache")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="'someone/t5-model' is not a local folder and not in the Hugging Face cache"):
        T5TextEncoder.from_pretrained("someone/t5-model")
    assert calls == [{"local_files_only": True}]


def test_long_prompt_warns_how_much_is_dropped(t5_folder):
    enc = T5TextEncoder.from_pretrained(t5_folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.tokenize(["a short prompt", "x" * 119])  # 119 bytes + </s> = 120 tokens: nothing dropped
    with pytest.warns(UserWarning, match=r"prompt 1 has 10001 tokens but the text encoder keeps 120: the last 9881 "
                                         r"are dropped \(everything after \.\.\.'x+'\)"):
        ids, mask = enc.tokenize(["short", "x" * 10_000])
    assert ids.shape == (2, 120) and bool(mask[1].all())
    with pytest.warns(UserWarning, match=r"prompt 0 has 201 tokens .* the last 81 are dropped .*; prompt 2 has 131"):
        enc.tokenize(["y" * 200, "short", "z" * 130])  # one warning per call
    enc.warn_truncation = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert enc.tokenize("x" * 10_000)[0].shape == (1, 120)


def test_truncated_text_encoder_weights_name_the_file(t5_folder, tmp_path):
    folder = tmp_path / "t5"
    shutil.copytree(t5_folder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(WeightsFileError, match="is truncated") as e:
        T5TextEncoder.from_pretrained(folder)
    assert str(weights) in str(e.value)
