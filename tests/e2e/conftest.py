"""Fixtures for the app tests: tiny shards, a tiny VAE and a tiny T5, all built locally."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

APPS = Path(__file__).resolve().parents[2] / "apps"


def load_app(name: str):
    """Import `apps/<name>/__main__.py` as a module."""
    path = APPS / name / "__main__.py"
    spec = importlib.util.spec_from_file_location(f"app_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def build_random_t5(path: Path, d_model: int = 32, seed: int = 0) -> Path:
    """Save a small random T5 encoder + byte-level tokenizer to `path`, loaded by the apps through the same
    `T5TextEncoder.from_pretrained` path as a real model (no download)."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=384, d_model=d_model, d_kv=16, d_ff=2 * d_model, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    T5EncoderModel(config).save_pretrained(path)
    ByT5Tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    import webdataset as wds

    from ea_data.synthetic import SceneSpec, make_video

    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(root / "shard-000000.tar")) as w:
        for i in range(4):
            truth = make_video(root / f"v{i}.mp4", [SceneSpec.random(rng, 12, motion="slow")], width=64, height=64)
            meta = {"caption": truth.scenes[0].caption, "type": "video", "fps": 8, "num_frames": 12,
                    "width": 64, "height": 64}
            w.write({"__key__": f"clip{i}", "mp4": (root / f"v{i}.mp4").read_bytes(),
                     "json": json.dumps(meta).encode()})
    for f in root.glob("v*.mp4*"):
        f.unlink()
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from ea_vae import SliceVAE, SliceVAEConfig

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    SliceVAE(SliceVAEConfig.tiny(block_out_channels=(16, 16, 32, 32))).save_pretrained(root / "vae")
    build_random_t5(root / "t5", d_model=32)
    return {"vae": root / "vae", "text_encoder": root / "t5"}
