"""Differentiable rewards: loaded from a folder, equal to the data filter's aesthetic scorer and to a
plain CLIP similarity on the same tiny open_clip model, and differentiable in the frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("open_clip")

from ea_data.scoring.aesthetic import AestheticHead, AestheticScorer  # noqa: E402
from ea_data.scoring.rewards import (  # noqa: E402
    AestheticReward,
    ClipPreferenceReward,
    load_reward,
    register_reward,
)

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("reward")
    (folder / "tiny_reward_clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder / "tiny_reward_clip.json")
    torch.manual_seed(0)
    clip = open_clip.create_model("tiny_reward_clip", pretrained=None)
    torch.save(clip.state_dict(), folder / "clip.pt")
    head = AestheticHead(embed_dim=32)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, folder / "head.safetensors")
    return folder


def _write(folder, spec):
    (folder / "reward.json").write_text(json.dumps(spec))
    return folder


def _frames(n=3, size=32, seed=0):
    """uint8 frames and the same frames in [-1, 1] (exact uint8 levels)."""
    rng = np.random.default_rng(seed)
    u8 = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).double() / 255 * 2 - 1
    return u8, x.float()


def test_aesthetic_reward_equals_the_data_filter_scorer(reward_dir):
    spec = {"kind": "aesthetic", "model_config": "tiny_reward_clip.json", "clip_weights": "clip.pt",
            "head": "head.safetensors"}
    reward = load_reward(_write(reward_dir, spec))
    assert isinstance(reward, AestheticReward) and reward.max_reward == 10.0
    u8, x = _frames()
    # the curation scorer: PIL preprocessing (a 32x32 frame is not resized) + the same CLIP and head
    scorer = AestheticScorer("tiny_reward_clip", clip_weights=str(reward_dir / "clip.pt"),
                             head=reward_dir / "head.safetensors", max_frames=None)
    with torch.inference_mode():
        ref = scorer.head(scorer.embed(u8)).clone()
    x.requires_grad_(True)
    got = reward(x)
    # fp32 CLIP on identical pixels: differences are rounding in the normalisation only
    torch.testing.assert_close(got.detach(), ref, rtol=1e-4, atol=1e-4)
    got.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in reward.parameters())  # the reward itself stays fixed


@pytest.mark.parametrize("kind", ["hpsv2", "pickscore"])
def test_preference_rewards_are_scaled_clip_similarity(reward_dir, kind):
    import open_clip

    spec = {"kind": kind, "model_config": "tiny_reward_clip.json", "clip_weights": "clip.pt"}
    reward = load_reward(_write(reward_dir, spec))
    assert isinstance(reward, ClipPreferenceReward)
    clip = open_clip.create_model("tiny_reward_clip", pretrained=None)
    clip.load_state_dict(torch.load(reward_dir / "clip.pt", weights_only=True))
    clip.eval()
    scale = 1.0 if kind == "hpsv2" else float(clip.logit_scale.detach().exp())
    assert reward.max_reward == pytest.approx(scale)
    u8, x = _frames(2, seed=1)
    prompts = ["a red square moving left", "a blue circle"]
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    with torch.no_grad():
        img = clip.encode_image((torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255 - mean) / std)
        txt = clip.encode_text(open_clip.get_tokenizer("tiny_reward_clip")(prompts))
        ref = scale * torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    torch.testing.assert_close(reward(x, prompts), ref, rtol=1e-4, atol=1e-4 * scale)
    with pytest.raises(ValueError, match="one prompt per frame"):
        reward(x, prompts[:1])


def test_resize_for_other_frame_sizes(reward_dir):
    spec = {"kind": "aesthetic", "model_config": "tiny_reward_clip.json", "clip_weights": "clip.pt",
            "head": "head.safetensors"}
    reward = load_reward(_write(reward_dir, spec))
    x = torch.rand(2, 3, 48, 64) * 2 - 1
    assert reward(x).shape == (2,)


def test_load_errors_and_custom_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match="reward.json"):
        load_reward(tmp_path)
    _write(tmp_path, {"kind": "mps"})
    with pytest.raises(ValueError, match="'mps' is unknown"):
        load_reward(tmp_path)
    (tmp_path / "reward.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_reward(tmp_path)

    class Brightness(torch.nn.Module):
        max_reward = 1.0

        def forward(self, frames, prompts=None):
            return frames.mean(dim=(1, 2, 3))

    register_reward("brightness", lambda folder, spec, device: Brightness())
    assert isinstance(load_reward(_write(tmp_path, {"kind": "brightness"})), Brightness)
