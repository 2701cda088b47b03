"""Weight-loading scorers: RAFT motion and the CLIP + MLP aesthetic predictor, with random local weights."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ea_data import build_scorers, score_clip
from ea_data.scoring.aesthetic import AestheticHead
from ea_data.scoring.frames import sample_clip_frames
from ea_data.scoring.motion import RaftMotion
from ea_data.synthetic import SceneSpec, make_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    rng = np.random.default_rng(1)
    return make_video(tmp_path_factory.mktemp("models") / "v.mp4", [SceneSpec.random(rng, 16, motion="slow")],
                      width=96, height=64, fps=8)


@pytest.fixture(scope="module")
def raft_weights(tmp_path_factory):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("raft")
    sd = raft_small(weights=None).state_dict()
    torch.save(sd, d / "raft_small.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "raft_small.safetensors"))
    return d, sd


@pytest.mark.parametrize("name", ["raft_small.pth", "raft_small.safetensors"])
def test_raft_loads_weights_and_gives_flow(video, raft_weights, name):
    d, sd = raft_weights
    raft = RaftMotion(d / name, "small", work_size=128, num_flow_updates=1)
    for k, v in raft.net.state_dict().items():
        torch.testing.assert_close(v, sd[k])  # the file's weights, not a fresh random init
    frames = sample_clip_frames(video.path, 0.0, 2.0, 2.0).frames  # 4 frames of 64x96 -> 128x192
    flow = raft.flow(frames)
    assert flow.shape == (3, 2, 128, 192) and flow.dtype == torch.float32 and torch.isfinite(flow).all()
    # The score is the mean flow magnitude with camera shake removed: each step's shake is its
    # median flow minus the smooth camera path (3 steps: a straight-line fit of the cumulative path).
    f = flow.permute(0, 2, 3, 1).numpy().astype(np.float64)
    shifts = np.median(f.reshape(3, -1, 2), axis=1)
    path = np.concatenate([np.zeros((1, 2)), np.cumsum(shifts, axis=0)])
    t = np.arange(4.0)
    line = np.stack([np.polyval(np.polyfit(t, path[:, j], 1), t) for j in range(2)], axis=1)
    shake = shifts - np.diff(line, axis=0)
    expected = np.mean([np.linalg.norm(f[k] - shake[k], axis=-1).mean() for k in range(3)])
    assert raft(frames) == pytest.approx(expected, rel=1e-5)
    if name.endswith(".pth"):
        built = build_scorers(("motion",), motion_backend="raft", raft_weights=d / name, motion_work_size=128,
                              raft_flow_updates=1)
        assert built.skipped == {}
        assert isinstance(score_clip(video.path, 0.0, 1.0, built, sample_fps=2.0)["motion_score"], float)


def test_raft_rejects_wrong_file(tmp_path):
    torch.save({"layers.0.weight": torch.zeros(2, 2)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="x.pth"):
        RaftMotion(tmp_path / "x.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        RaftMotion(tmp_path / "missing.pth")


TINY_CLIP = {
    "embed_dim": 48,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def aesthetic_files(tmp_path_factory):
    """A tiny open_clip config with random weights and a random head, saved under the released key names."""
    open_clip = pytest.importorskip("open_clip")
    d = tmp_path_factory.mktemp("aesthetic")
    (d / "ea-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(d / "ea-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("ea-tiny-clip", pretrained=None)
    torch.save(model.state_dict(), d / "clip.pt")
    head = {  # the improved-aesthetic-predictor's layout: Linear layers at Sequential indices 0, 2, 4, 6, 7
        "layers.0.weight": torch.randn(1024, 48) / 7, "layers.0.bias": torch.randn(1024) / 10,
        "layers.2.weight": torch.randn(128, 1024) / 32, "layers.2.bias": torch.randn(128) / 10,
        "layers.4.weight": torch.randn(64, 128) / 11, "layers.4.bias": torch.randn(64) / 10,
        "layers.6.weight": torch.randn(16, 64) / 8, "layers.6.bias": torch.randn(16) / 10,
        "layers.7.weight": torch.randn(1, 16) / 4, "layers.7.bias": torch.tensor([5.0]),
    }
    torch.save(head, d / "head.pth")
    save_file(head, str(d / "head.safetensors"))
    return d, head


@pytest.mark.parametrize("head_file", ["head.pth", "head.safetensors"])
def test_aesthetic_score_equals_hand_computation(video, aesthetic_files, head_file):
    import open_clip
    from PIL import Image

    d, head = aesthetic_files
    built = build_scorers(("aesthetic",), clip_model="ea-tiny-clip", clip_weights=str(d / "clip.pt"),
                          aesthetic_head=d / head_file, aesthetic_frames=None)
    assert built.skipped == {}
    got = score_clip(video.path, 0.0, 2.0, built, sample_fps=2.0)["aesthetic_score"]

    # Independent path: open_clip's own loading + transforms, then the MLP as plain matrix products.
    model, _, preprocess = open_clip.create_model_and_transforms("ea-tiny-clip", pretrained=str(d / "clip.pt"))
    frames = sample_clip_frames(video.path, 0.0, 2.0, 2.0).frames
    with torch.no_grad():
        emb = model.eval().encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames]))
    x = emb / emb.norm(dim=-1, keepdim=True)
    for i in (0, 2, 4, 6, 7):  # no activations between the Linear layers; dropout is off at inference
        x = x @ head[f"layers.{i}.weight"].T + head[f"layers.{i}.bias"]
    assert got == pytest.approx(float(x.mean()), abs=1e-5)


def test_aesthetic_head_layout_and_bad_files(tmp_path, aesthetic_files):
    assert [k for k in AestheticHead(768).state_dict()] == [
        f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]
    torch.save({"fc.weight": torch.zeros(1, 768)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="wrong.pth"):
        AestheticHead.from_file(tmp_path / "wrong.pth")
    d, _ = aesthetic_files
    with pytest.raises(ValueError, match="768-d|48-d"):  # a ViT-L/14 head on a 48-d model
        build_scorers(("aesthetic",), clip_model="ea-tiny-clip", clip_weights=str(d / "clip.pt"),
                      aesthetic_head=_released_size_head(tmp_path))


def _released_size_head(tmp_path):
    path = tmp_path / "head768.pth"
    torch.save(AestheticHead(768).state_dict(), path)
    return path


def test_aesthetic_without_weights_is_skipped_not_random(video):
    built = build_scorers(("motion", "aesthetic"), aesthetic_head="/nonexistent/head.pth")  # no clip weights
    assert "aesthetic" not in built.fns and "clip_weights" in built.skipped["aesthetic"]
    scores = score_clip(video.path, 0.0, 2.0, built, sample_fps=2.0)
    assert scores["aesthetic_score"] is None and isinstance(scores["motion_score"], float)
