"""insert_motion_modules on a foreign DiT (diffusers' PixArtTransformer2DModel): unchanged at insertion,
and after a few optimisation steps of the motion modules alone, frames influence each other."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from ea_dit import insert_motion_modules, video_frames

diffusers = pytest.importorskip("diffusers")

B, F, C, H, W, T = 1, 4, 4, 8, 8, 5


def _pixart():
    torch.manual_seed(0)
    model = diffusers.PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=C, out_channels=2 * C, num_layers=2,
        cross_attention_dim=32, sample_size=8, patch_size=2, caption_channels=24)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _video_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(B, C, F, H, W, generator=g)
    text = torch.randn(B, T, 24, generator=g)
    return video, text


def _run(model, video, text, t):
    """The host sees B*F frames; the motion modules are told F through the context."""
    frames = rearrange(video, "b c f h w -> (b f) c h w")
    with video_frames(model, num_frames=F):
        out = model(frames, encoder_hidden_states=text.repeat_interleave(F, 0),
                    timestep=t.repeat_interleave(F)).sample
    return rearrange(out, "(b f) c h w -> b c f h w", f=F)


def test_unchanged_at_insertion_and_host_keys_kept():
    model = _pixart().eval()
    video, text = _video_batch()
    t = torch.tensor([300.0])
    frames = rearrange(video, "b c f h w -> (b f) c h w")
    with torch.no_grad():
        before = model(frames, encoder_hidden_states=text.repeat_interleave(F, 0),
                       timestep=t.repeat_interleave(F)).sample
    host_keys = set(model.state_dict())
    mms = insert_motion_modules(model, num_heads=2, grid=2, norm_groups=8)
    assert len(mms) == 2
    assert host_keys <= set(model.state_dict())  # the host's own keys are untouched
    with torch.no_grad():
        after = _run(model, video, text, t)
    assert torch.equal(rearrange(after, "b c f h w -> (b f) c h w"), before)


def test_training_motion_modules_makes_frames_interact():
    model = _pixart()
    model.requires_grad_(False)
    mms = insert_motion_modules(model, num_heads=2, grid=2, norm_groups=8)
    assert all(p.requires_grad for p in mms.parameters())
    opt = torch.optim.Adam(mms.parameters(), lr=1e-2)
    video, text = _video_batch(seed=1)
    # a target that needs information from other frames: every frame should predict the video's mean
    target = video.mean(dim=2, keepdim=True).expand_as(video)
    t = torch.tensor([500.0])
    losses = []
    for _ in range(4):
        pred = _run(model, video, text, t)[:, :C]
        loss = (pred - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    probe = video.clone()
    probe[:, :, 0] += 1.0  # change only the first frame
    with torch.no_grad():
        delta = _run(model, probe, text, t) - _run(model, video, text, t)
    assert delta[:, :, 3].abs().max() > 1e-4  # ... and the last frame's output moves


def test_frames_must_be_given():
    model = _pixart()
    insert_motion_modules(model, num_heads=2, norm_groups=8)
    video, text = _video_batch()
    with pytest.raises(RuntimeError, match="video_frames"):
        model(rearrange(video, "b c f h w -> (b f) c h w"), encoder_hidden_states=text.repeat_interleave(F, 0),
              timestep=torch.full((F,), 10.0))
    with pytest.raises(ValueError, match="already"):
        insert_motion_modules(model)
