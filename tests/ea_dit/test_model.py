"""VideoDiT against diffusers' PixArtTransformer2DModel with the same random weights, U-ViT identity,
checkpointing, save/load and input checks. Everything tiny and on the CPU."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from ea_dit import VideoDiT, VideoDiTConfig
from ea_dit.grid_reshape import TokenGrid

diffusers = pytest.importorskip("diffusers")

HEADS, HEAD_DIM = 2, 24  # hidden 48: divisible by 3 (PixArt's size conditions) and by the GroupNorm's 8 groups
MM = dict(motion_num_heads=4, motion_norm_groups=8)


def _perturb_(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    """Add noise to every parameter, so zero-initialised layers and identity norms take part in the test."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _pixart(affine: bool, additional: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = diffusers.PixArtTransformer2DModel(
        num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=4, out_channels=8, num_layers=3,
        cross_attention_dim=HEADS * HEAD_DIM, sample_size=8, patch_size=2, caption_channels=20,
        norm_elementwise_affine=affine, use_additional_conditions=additional)
    _perturb_(model, seed + 1)
    return model.eval()


@pytest.fixture(scope="module", params=[(False, False), (True, True)], ids=["pixart512", "affine+sizecond"])
def pixart(request, tmp_path_factory):
    affine, additional = request.param
    model = _pixart(affine, additional)
    folder = tmp_path_factory.mktemp("pixart")
    model.save_pretrained(folder)
    return model, folder


def _inputs(b=2, f=1, h=8, w=8, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(b, 4, f, h, w, generator=g)
    timestep = torch.tensor([3.0, 640.0])[:b]
    text = torch.randn(b, t, 20, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[-1, t // 2:] = False  # the last prompt is padded
    return latents, timestep, text, mask


def _pixart_forward(model, frames, timestep, text, mask):
    """diffusers on (B, C, H, W) frames; size conditions as PixArt's pipeline makes them (pixels = 8 x latent)."""
    b, _, h, w = frames.shape
    added = None
    if model.config.use_additional_conditions:
        added = {"resolution": torch.tensor([[h * 8.0, w * 8.0]]).repeat(b, 1),
                 "aspect_ratio": torch.full((b, 1), h / w)}
    with torch.no_grad():
        return model(frames, encoder_hidden_states=text, timestep=timestep, added_cond_kwargs=added,
                     encoder_attention_mask=mask.long()).sample


@pytest.mark.parametrize("size", [(8, 8), (12, 8)], ids=["base", "non-square"])
def test_one_frame_matches_pixart(pixart, size):
    ref_model, folder = pixart
    model = VideoDiT.from_pretrained(folder, **MM).eval()
    assert model.config.norm_elementwise_affine == ref_model.config.norm_elementwise_affine
    latents, t, text, mask = _inputs(h=size[0], w=size[1])
    expected = _pixart_forward(ref_model, latents[:, :, 0], t, text, mask)
    with torch.no_grad():
        out = model(latents, t, text, mask)
    assert out.shape == (2, 8, 1, *size)
    torch.testing.assert_close(out[:, :, 0], expected, atol=1e-5, rtol=1e-5)


def test_frames_match_pixart_per_frame_with_fresh_motion_modules(pixart):
    ref_model, folder = pixart
    model = VideoDiT.from_pretrained(folder, **MM).eval()
    assert all(b.motion_module is not None for b in model.blocks) and len(model.long_skips) == 0  # depth 3
    latents, t, text, mask = _inputs(f=3, h=8, w=12, seed=1)
    with torch.no_grad():
        out = model(latents, t, text, mask)
    for f in range(3):
        expected = _pixart_forward(ref_model, latents[:, :, f], t, text, mask)
        torch.testing.assert_close(out[:, :, f], expected, atol=1e-5, rtol=1e-5)


def test_pixart_conversion_rejects_unknown_keys(tmp_path):
    from ea_dit.pixart import convert_pixart_state_dict

    model = _pixart(False, False)
    sd = dict(model.state_dict())
    sd["transformer_blocks.0.extra.weight"] = torch.zeros(1)
    cfg = VideoDiTConfig.tiny(hidden_size=48, num_heads=2, depth=3, caption_channels=20)
    with pytest.raises(ValueError, match="does not know"):
        convert_pixart_state_dict(sd, cfg)


def _tiny(**kw) -> VideoDiT:
    torch.manual_seed(0)
    return VideoDiT(VideoDiTConfig.tiny(**kw)).eval()


def _tiny_inputs(b=2, f=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 4, f, h, w, generator=g), torch.tensor([5.0, 900.0])[:b],
            torch.randn(b, 6, 32, generator=g), torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])[:b])


def test_long_skips_are_identity_at_insertion_and_matter_after():
    with_skips = _tiny(depth=6, long_skip=True)
    _perturb_(with_skips, seed=3)  # everything random...
    for skip in with_skips.long_skips:  # ...except the freshly inserted skips
        torch.nn.init.zeros_(skip.weight)
        torch.nn.init.zeros_(skip.bias)
    without = _tiny(depth=6, long_skip=False)
    missing, unexpected = without.load_state_dict(with_skips.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == sorted(f"long_skips.{i}.{p}" for i in range(2) for p in ("weight", "bias"))
    x = _tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(with_skips(*x), without(*x), atol=0, rtol=0)
        _perturb_(with_skips.long_skips, seed=4)
        assert (with_skips(*x) - without(*x)).abs().max() > 1e-3


def test_long_skip_wiring_follows_uvit():
    """Depth 6 -> 2 skips: block 1's output enters block 4 through long_skips[0], block 0's enters block 5."""
    model = _tiny(depth=6, long_skip=True)
    _perturb_(model, seed=5)
    assert VideoDiTConfig.tiny(depth=28).num_long_skips == 13
    latents, t, text, mask = _tiny_inputs()
    b, _, f, h, w = latents.shape
    with torch.no_grad():
        out = model(latents, t, text, mask)
        # hand-written reference of the model's data flow with the skip table written out
        x = model.patch_embed(latents.permute(0, 2, 1, 3, 4).reshape(b * f, 4, h, w)).reshape(b, -1, 64)
        mod, emb = model.adaln_single(t, x.dtype)
        txt = model.caption_projection(text)
        outputs = {}
        for i, block in enumerate(model.blocks):
            if i == 4:
                x = x + model.long_skips[0](outputs[1])
            if i == 5:
                x = x + model.long_skips[1](outputs[0])
            x = block(x, mod, txt, mask.bool(), TokenGrid(f, h // 2, w // 2))
            outputs[i] = x
        x = model.final_layer(x, emb).reshape(b, f, h // 2, w // 2, 2, 2, 8)
        expected = torch.einsum("bfhwpqc->bcfhpwq", x).reshape(b, 8, f, h, w)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


def test_motion_modules_mix_frames_only_when_trained():
    fresh = _tiny()
    _perturb_(fresh, seed=6)
    for block in fresh.blocks:
        block.motion_module.initialize_weights()
    latents, t, text, mask = _tiny_inputs()
    changed = latents.clone()
    changed[:, :, 0] += 1.0
    with torch.no_grad():
        d_fresh = (fresh(changed, t, text, mask) - fresh(latents, t, text, mask))[:, :, 1:]
        for p in fresh.motion_module_parameters():
            p.add_(torch.randn_like(p) * 0.1)
        d_trained = (fresh(changed, t, text, mask) - fresh(latents, t, text, mask))[:, :, 1:]
    assert d_fresh.abs().max() == 0  # frames are independent images while the modules are fresh
    assert d_trained.abs().max() > 1e-4


def test_gradient_checkpointing_gives_same_grads():
    model = _tiny(depth=4)
    _perturb_(model, seed=8)
    model.train()
    x = _tiny_inputs(f=2)

    def grads():
        model.zero_grad()
        model(*x).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.enable_gradient_checkpointing()
    ckpt = grads()
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = _tiny(motion_module_positions=(0, 2), long_skip=True)
    _perturb_(model, seed=9)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["_class_name"] == "VideoDiT"
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.endswith(".tmp")]
    loaded = VideoDiT.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    assert [b.motion_module is not None for b in loaded.blocks] == [True, False, True, False]
    x = _tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(*x), model(*x), atol=0, rtol=0)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        VideoDiT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ValueError, match="UNet2DConditionModel"):
        VideoDiT.from_pretrained(tmp_path)
    _tiny().save_pretrained(tmp_path / "ok")
    with pytest.raises(ValueError, match="do not match"):
        VideoDiT.from_pretrained(tmp_path / "ok", motion_module=False)


def test_bad_inputs_raise_clear_errors():
    model = _tiny()
    latents, t, text, mask = _tiny_inputs()
    with pytest.raises(ValueError, match="add a frames axis"):
        model(latents[:, :, 0], t, text, mask)
    with pytest.raises(ValueError, match="in_channels=4"):
        model(latents[:, :3], t, text, mask)
    with pytest.raises(ValueError, match="patch_size"):
        model(latents[..., :7], t, text, mask)
    with pytest.raises(ValueError, match="Grid Reshape"):
        model(latents[..., :6], t, text, mask)  # 3x4 tokens: not divisible by the 2x2 cells
    with pytest.raises(ValueError, match="caption_channels"):
        model(latents, t, text[..., :16], mask)
    with pytest.raises(ValueError, match="text_mask"):
        model(latents, t, text, mask[:, :4])
    with pytest.raises(ValueError, match="timestep"):
        model(latents, torch.zeros(3), text, mask)
    with pytest.raises(TypeError, match="floating-point"):
        model(latents.long(), t, text, mask)
    with pytest.raises(ValueError, match="attention_backend"):
        VideoDiTConfig.tiny(attention_backend="flash")
    # a scalar timestep and no mask are fine; grid 1 lifts the divisibility requirement
    assert model(latents, 10, text).shape == (2, 8, 3, 8, 8)
    assert _tiny(motion_grid=1)(latents[..., :6], t, text, mask).shape == (2, 8, 3, 8, 6)


def test_bf16_runs_close_to_fp32():
    model = _tiny(depth=2)
    _perturb_(model, seed=11)
    half = _tiny(depth=2)
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16)
    x = _tiny_inputs(f=2)
    with torch.no_grad():
        ref, out = model(*x), half(*x)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.slow
def test_torch_compile_matches_eager():
    """Compiled and eager fp32 forwards both agree with an fp64 forward of the same weights.

    The tolerance comes from fp32 rounding, not from one machine's result: a sum of K products carries a
    rounding error of about eps * sqrt(K) times its scale (random-walk accumulation), and the errors of the
    n reductions the signal passes through in sequence add up the same way, so
    tol = eps * sqrt(K * n) * max|output|. Compilation reorders and fuses those sums, which changes the
    rounding (measured: 1.3e-5 here against a tolerance of 5e-5) but not its order; a wrong kernel is off
    by orders of magnitude more.
    """
    model = _tiny(depth=2)
    _perturb_(model, seed=10)
    x = _tiny_inputs(f=2)
    compiled = torch.compile(model, fullgraph=True)  # no graph breaks in the model's forward
    with torch.no_grad():
        got, eager = compiled(*x), model(*x)
        ref = copy.deepcopy(model).double()(*(t.double() if t.is_floating_point() else t for t in x))
    cfg = model.config
    reduction = max(cfg.hidden_size * cfg.mlp_ratio, cfg.caption_channels, 256)  # 256: timestep frequencies
    sequential = 4 + 20 * cfg.depth  # embeddings + ~20 matmul/softmax reductions per block (with its motion module)
    tol = torch.finfo(torch.float32).eps * math.sqrt(reduction * sequential) * ref.abs().max().item()
    for name, out in (("eager", eager), ("compiled", got)):
        err = (out.double() - ref).abs().max().item()
        assert err <= tol, f"{name} fp32 forward is {err:.3g} from fp64; fp32 rounding allows {tol:.3g}"


@pytest.mark.slow
def test_triton_backend_matches_sdpa():
    """The whole model on the Triton kernels (interpreted on the CPU) against the SDPA path."""
    pytest.importorskip("ea_dit.kernels.flash_attention")
    pytest.importorskip("ea_dit.kernels.temporal_attention")
    model = _tiny(depth=1, long_skip=False)
    _perturb_(model, seed=12)
    x = _tiny_inputs(b=1, f=2)
    with torch.no_grad():
        expected = model(*x)
        model.set_attention_backend("triton")
        torch.testing.assert_close(model(*x), expected, atol=1e-4, rtol=1e-4)


def test_frame_position_embedding_adds_each_frames_index_sinusoid():
    """With frame_position_embedding, frame f computes what the plain model computes with the frame index's
    sinusoid (interleaved sin/cos of f * 10000^(-2i/D), written out here) added to the patch-embedding bias;
    off, identical frames give identical outputs (nothing else tells frames apart without motion modules)."""
    torch.manual_seed(0)
    base = dict(in_channels=4, sample_size=8, caption_channels=8, hidden_size=32, depth=2, num_heads=4,
                motion_module=False, learn_sigma=False)
    on = VideoDiT(VideoDiTConfig(**base, frame_position_embedding=True)).eval()
    torch.nn.init.normal_(on.final_layer.linear.weight)
    off = VideoDiT(VideoDiTConfig(**base)).eval()
    off.load_state_dict(on.state_dict())
    frame = torch.randn(1, 4, 1, 8, 8)
    video = frame.expand(1, 4, 3, 8, 8).contiguous()
    text, t = torch.randn(1, 3, 8), torch.tensor([500])
    with torch.no_grad():
        out_off = off(video, t, text)
        out_on = on(video, t, text)
    torch.testing.assert_close(out_off[:, :, 1], out_off[:, :, 0])
    assert (out_on[:, :, 1] - out_on[:, :, 0]).abs().max() > 1e-3
    d = 32
    for f in range(3):
        w = torch.tensor([10000 ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)
        pe = torch.stack([torch.sin(f * w), torch.cos(f * w)], dim=-1).flatten().float()
        ref = VideoDiT(VideoDiTConfig(**base)).eval()
        ref.load_state_dict(on.state_dict())
        with torch.no_grad():
            ref.patch_embed.proj.bias += pe
            expected = ref(frame, t, text)
        torch.testing.assert_close(out_on[:, :, f:f + 1], expected, rtol=1e-5, atol=1e-5)
