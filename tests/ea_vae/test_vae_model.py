"""SliceVAE against diffusers' AutoencoderKLMagvit (same random weights), and its slicing guarantees."""

import json

import pytest
import torch
import torch.nn.functional as F

from ea_vae import SliceVAE, SliceVAEConfig
from ea_vae.blocks import SpatialAttention, Upsample3D
from ea_vae.causal_conv import CausalConv3d, causal_conv3d_reference
from ea_vae.causal_conv_fast import conv_normed, conv_time_doubled
from ea_vae.convert import state_dict_to_diffusers
from ea_vae.layout import norm_act, to_frames
from ea_vae.stream import StreamCache, Workspace

try:  # only the tests comparing with diffusers need it; they skip through the `reference` fixture
    import diffusers
except ImportError:
    diffusers = None

TINY = dict(block_out_channels=[32, 32, 64, 64], latent_channels=4, layers_per_block=1, norm_num_groups=8)


@pytest.fixture(scope="module")
def reference():
    """A tiny diffusers AutoencoderKLMagvit with random weights (norms and biases perturbed too)."""
    if diffusers is None:
        pytest.skip("needs diffusers (the reference implementation)")
    torch.manual_seed(0)
    model = diffusers.AutoencoderKLMagvit(**TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def folder(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("magvit")
    reference.save_pretrained(path)
    return path


@pytest.fixture
def vae(folder):
    return SliceVAE.from_pretrained(folder)


def video(frames=9, h=32, w=48, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, h, w, generator=g) * 2 - 1


def latents(n=3, h=4, w=6, batch=1, seed=1):
    return torch.randn(batch, 4, n, h, w, generator=torch.Generator().manual_seed(seed))


def close(a, b, tol=2e-5):
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), f"max abs difference {err}"


# ----------------------------------------------------------------------------- parity with diffusers


@pytest.mark.parametrize("frames", [1, 9])
def test_encode_matches_diffusers(vae, reference, frames):
    x = video(frames)
    with torch.no_grad():
        ours, theirs = vae.encode(x), reference.encode(x).latent_dist
    close(ours.mean, theirs.mean)
    close(ours.logvar, theirs.logvar)
    assert ours.mean.shape == (1, 4, 1 + (frames - 1) // 4, 4, 6)


@pytest.mark.parametrize("n", [1, 3])
def test_decode_matches_diffusers(vae, reference, n):
    z = latents(n)
    with torch.no_grad():
        ours, theirs = vae.decode(z), reference.decode(z).sample
    assert ours.shape == (1, 3, 1 + 4 * (n - 1), 32, 48)
    close(ours, theirs)


@pytest.mark.parametrize("decode_latents", [None, 1, 2])
def test_inference_shortcuts_match_the_autograd_path(vae, reference, decode_latents):
    """Without autograd, decode recycles buffers between slices and convolves time-doubled frames once
    (folded pair kernels); with autograd it runs the plain 3-tap convolutions. Both match diffusers."""
    z = latents(4, batch=2)
    if decode_latents is not None:
        vae.enable_slicing(decode_latents=decode_latents)
    with torch.no_grad():
        fast, theirs = vae.decode(z), reference.decode(z).sample
    plain = vae.decode(z).detach()  # parameters require grad: autograd path
    close(fast, theirs)
    close(plain, theirs)


def test_sliced_paths_match_diffusers(vae, reference):
    """Both of diffusers' chunkings (it always runs frame 0 alone, then 4 frames / 1 latent) are the same
    function as ours sliced any way."""
    x, z = video(13), latents(4)
    vae.enable_slicing(encode_frames=8, decode_latents=2)
    with torch.no_grad():
        close(vae.encode(x).mean, reference.encode(x).latent_dist.mean)
        close(vae.decode(z), reference.decode(z).sample)


def test_batch_matches_single_videos(vae):
    x = video(5, batch=2)
    with torch.no_grad():
        both = vae.encode(x).mean
        close(both[1:], vae.encode(x[1:]).mean)
        vae.enable_slicing(4, 1)
        dec = vae.decode(both)
        close(dec[:1], vae.decode(both[:1]))


def test_diffusers_layout_round_trip(vae):
    """Our weights, renamed to diffusers keys, load strictly into AutoencoderKLMagvit."""
    model = diffusers.AutoencoderKLMagvit(**TINY)
    model.load_state_dict(state_dict_to_diffusers(vae.state_dict()), strict=True)


# ----------------------------------------------------------------------------- slicing


@pytest.mark.parametrize("encode_frames,decode_latents", [(4, 1), (8, 2), (12, 3), (4, 5)])
def test_streaming_slices_equal_unsliced(vae, encode_frames, decode_latents):
    x = video(17)
    with torch.no_grad():
        post = vae.encode(x)
        full = vae.decode(post.mean)
        vae.enable_slicing(encode_frames=encode_frames, decode_latents=decode_latents, scheme="streaming")
        calls = []
        vae.progress_callback = lambda done, total: calls.append((done, total))
        sliced_post = vae.encode(x)
        sliced = vae.decode(post.mean)
    close(sliced_post.mean, post.mean, 1e-5)
    close(sliced_post.logvar, post.logvar, 1e-5)
    close(sliced, full, 1e-5)
    n_dec = -(-4 // decode_latents)  # latent 0 rides with the first slice
    assert calls[-1] == (n_dec, n_dec)


def test_streaming_is_causal(vae):
    """Changing frames 5.. leaves latents 0 and 1 (frames 0..4) and their decoded frames unchanged."""
    x = video(13)
    y = x.clone()
    y[:, :, 5:] = -y[:, :, 5:]
    with torch.no_grad():
        a, b = vae.encode(x).mean, vae.encode(y).mean
        assert torch.equal(a[:, :, :2], b[:, :, :2])
        assert not torch.allclose(a[:, :, 2:], b[:, :, 2:])
        close(vae.decode(a[:, :, :2]), vae.decode(b)[:, :, :5], 1e-6)


def test_shared_scheme_is_close_but_not_equal(vae):
    """Feature sharing decodes the up blocks of every slice independently (replicate padding at the slice
    start instead of the real past), so it equals the exact result for a static video and deviates in
    proportion to how much the latents change over time."""
    g = torch.Generator().manual_seed(1)
    base, change = torch.randn(1, 4, 1, 4, 6, generator=g), torch.randn(1, 4, 5, 4, 6, generator=g)
    errors = []
    for eps in (0.0, 0.01, 0.1):
        z = base + eps * change
        with torch.no_grad():
            vae.disable_slicing()
            full = vae.decode(z)
            vae.enable_slicing(decode_latents=2, scheme="shared")
            shared = vae.decode(z)
        assert shared.shape == full.shape
        close(shared[:, :, :1], full[:, :, :1])  # slice 0 starts the video: the same function
        errors.append((shared - full).abs().mean().item() / full.abs().mean().item())
    assert errors[0] < 1e-5  # static video: identical up to rounding
    assert 1e-4 < errors[1] < 0.05 and errors[1] < errors[2] < 0.5


def test_shared_scheme_sees_the_previous_slice(vae):
    """Feature sharing: a slice's output depends on the previous slice's latents (through conv_in and the
    mid block), unlike fully independent slices."""
    z = latents(5)
    z2 = z.clone()
    z2[:, :, 1:3] += 1.0  # change slice [1, 3) only
    vae.enable_slicing(decode_latents=2, scheme="shared")
    with torch.no_grad():
        a, b = vae.decode(z), vae.decode(z2)
    assert not torch.allclose(a[:, :, 9:], b[:, :, 9:])  # frames of slice [3, 5) changed
    close(a[:, :, :1], b[:, :, :1], 0)


def test_image_only(vae):
    x = video(1)
    vae.enable_slicing(4, 1)
    with torch.no_grad():
        z = vae.encode(x).mode()
        y = vae.decode(z)
    assert z.shape == (1, 4, 1, 4, 6) and y.shape == (1, 3, 1, 32, 48)


def test_forward_and_gradients():
    vae = SliceVAE(SliceVAEConfig.tiny())
    vae.enable_slicing(4, 1)
    recon, posterior = vae(video(5, 16, 16), generator=torch.Generator().manual_seed(0))
    loss = recon.pow(2).mean() + posterior.kl().mean()
    loss.backward()
    assert vae.decoder.conv_out.weight.grad is not None
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- causal convolution and its fast paths


@pytest.mark.parametrize("stride", [1, 2])
def test_causal_conv_streams_its_definition(stride):
    """CausalConv3d fed slice by slice through one StreamCache equals the definition on the whole video."""
    torch.manual_seed(0)
    conv = CausalConv3d(5, 6, 3, stride=(stride, 1, 1))
    x = torch.randn(2, 5, 9, 4, 6)
    ref = causal_conv3d_reference(x, conv)
    cache = StreamCache()
    with torch.no_grad():
        whole = conv(to_frames(x), StreamCache())
        parts = [conv(to_frames(x[:, :, a:b]), cache) for a, b in ((0, 1), (1, 5), (5, 9))]
    close(whole.permute(0, 2, 1, 3, 4), ref, 1e-5)
    close(torch.cat(parts, 1).permute(0, 2, 1, 3, 4), ref, 1e-5)


@pytest.mark.parametrize("first", [0, 1])
@pytest.mark.parametrize("workspace", [False, True])
def test_fast_paths_match_the_plain_causal_conv(first, workspace):
    """conv_normed = conv(norm_act(h)); conv_time_doubled on time-doubled frames = the plain conv on them,
    over two slices carrying the cache (with and without a recycling Workspace)."""
    torch.manual_seed(0)
    conv = CausalConv3d(8, 6, 3)
    norm = torch.nn.GroupNorm(4, 8, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    distinct = torch.randn(1, 8, first + 4, 3, 5)
    doubled = torch.cat([distinct[:, :, :first], distinct[:, :, first:].repeat_interleave(2, dim=2)], 2)
    h = to_frames(doubled)
    with torch.no_grad():
        plain = conv(norm_act(h, norm, "silu"), StreamCache())
        close(conv_normed(conv, h, norm, "silu", StreamCache()), plain, 1e-5)
        cache = StreamCache(workspace=Workspace() if workspace else None)
        cut = first + 4  # slice 1: the lone frame (if any) and two pairs; slice 2: two pairs
        fast = [conv_time_doubled(conv, h[:, :cut], first, norm, "silu", cache),
                conv_time_doubled(conv, h[:, cut:], 0, norm, "silu", cache)]
    close(torch.cat(fast, 1), plain, 1e-5)


# ----------------------------------------------------------------------------- per-frame GroupNorm, attention


def test_group_norm_is_per_frame():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 16, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 16, 5, 6, 7)
    h = to_frames(x)
    out = norm_act(h, norm, "silu")
    for t in range(5):
        expected = F.silu(F.group_norm(x[:, :, t], 4, norm.weight, norm.bias, 1e-6))
        close(out[:, t], expected, 1e-5)
    h2 = h.clone()
    h2[:, 3:] *= 10  # other frames' statistics must not leak in
    close(norm_act(h2, norm, "silu")[:, :3], out[:, :3], 1e-6)


def test_spatial_attention_matches_plain_softmax():
    torch.manual_seed(0)
    attn = SpatialAttention(16, heads=2, groups=4, eps=1e-6)
    x = torch.randn(1, 16, 3, 4, 5)
    out = attn(to_frames(x)).permute(0, 2, 1, 3, 4)
    for t in range(3):
        f = F.group_norm(x[:, :, t], 4, attn.group_norm.weight, attn.group_norm.bias, 1e-6)
        tokens = f.flatten(2).transpose(1, 2)  # (1, 20, 16)
        q, k, v = (lin(tokens).view(1, 20, 2, 8).transpose(1, 2) for lin in (attn.to_q, attn.to_k, attn.to_v))
        w = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
        o = attn.to_out((w @ v).transpose(1, 2).reshape(1, 20, 16))
        close(out[:, :, t], x[:, :, t] + o.transpose(1, 2).reshape(1, 16, 4, 5), 1e-5)


def test_attention_model_streams_exactly():
    torch.manual_seed(0)
    vae = SliceVAE(SliceVAEConfig.tiny(mid_block_attention="spatial", mid_block_attention_heads=2)).eval()
    assert len(vae.decoder.mid_block.attentions) == 0  # layers_per_block=1: no gap between ResNets
    vae = SliceVAE(SliceVAEConfig.tiny(layers_per_block=2, mid_block_attention="spatial")).eval()
    assert len(vae.decoder.mid_block.attentions) == 1
    x = video(9, 16, 16)
    with torch.no_grad():
        full = vae.decode(vae.encode(x).mean)
        vae.enable_slicing(4, 1)
        close(vae.decode(vae.encode(x).mean), full, 1e-5)


@pytest.mark.parametrize("temporal", [False, True])
def test_subpixel_upsampler_matches_interpolate_then_conv3d(temporal):
    """Plain reference: nearest x2 in space, replicate past-padding in time, Conv3d, nearest x2 in time
    for every frame but the first."""
    torch.manual_seed(0)
    up = Upsample3D(6, temporal)
    x = torch.randn(1, 6, 3, 5, 4)
    ref = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
    ref = F.conv3d(F.pad(ref, (0, 0, 0, 0, 2, 0), mode="replicate"), up.conv.weight, up.conv.bias, padding=(0, 1, 1))
    if temporal:
        ref = torch.cat([ref[:, :, :1], ref[:, :, 1:].repeat_interleave(2, dim=2)], 2)
    out = up(to_frames(x), StreamCache()).permute(0, 2, 1, 3, 4)  # with autograd: differentiable fold
    close(out, ref, 1e-5)
    with torch.no_grad():  # in-place fold
        close(up(to_frames(x), StreamCache()).permute(0, 2, 1, 3, 4), ref, 1e-5)


def test_stream_cache_continuing_upsampler_doubles_every_frame():
    vae = SliceVAE(SliceVAEConfig.tiny()).eval()
    z = to_frames(latents(2, 2, 2))
    with torch.no_grad():
        assert vae.decoder(z, StreamCache()).shape[1] == 5  # 1 + 4
        assert vae.decoder(z, StreamCache(continuing=True)).shape[1] == 8


# ----------------------------------------------------------------------------- weights on disk


def test_save_load_round_trip(vae, tmp_path):
    vae.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["_class_name"] == "SliceVAE" and cfg["latent_channels"] == 4
    loaded = SliceVAE.from_pretrained(tmp_path / "m")
    assert loaded.config == vae.config
    for (k, a), (k2, b) in zip(vae.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = video(5)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x).mean, vae.encode(x).mean)


def test_from_pretrained_dtype(folder):
    vae = SliceVAE.from_pretrained(folder, dtype=torch.float64)
    assert vae.post_quant_conv.weight.dtype == torch.float64
    with torch.no_grad():
        assert vae.decode(latents(2).double()).dtype == torch.float64


def test_default_config_is_the_released_v51_vae():
    cfg = SliceVAEConfig()
    assert cfg.block_out_channels == (128, 256, 512, 512)
    assert (cfg.latent_channels, cfg.scaling_factor) == (16, 0.7125)
    assert (cfg.spatial_compression, cfg.temporal_compression) == (8, 4)
    with torch.device("meta"):  # shapes only, no memory
        ref, ours = diffusers.AutoencoderKLMagvit(), SliceVAE(cfg)
    theirs = {k: v.shape for k, v in state_dict_to_diffusers(ours.state_dict()).items()}
    assert theirs == {k: v.shape for k, v in ref.state_dict().items()}


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "x,match",
    [
        (video(7), "video has 7 frames; SliceVAE needs 1 \\+ 4k frames"),
        (video(5, h=20), "divisible by 8"),
        (torch.rand(1, 4, 5, 16, 16), "4 channels"),
        (torch.rand(1, 3, 16, 16), "unsqueeze\\(2\\)"),
        (video(5).double(), "float64 but the SliceVAE weights are torch.float32"),
        (torch.zeros(1, 3, 5, 16, 16, dtype=torch.uint8), "floating point"),
    ],
)
def test_encode_errors(vae, x, match):
    with pytest.raises((ValueError, TypeError), match=match):
        vae.encode(x)


def test_decode_and_switch_errors(vae):
    with pytest.raises(ValueError, match="3 channels"):
        vae.decode(torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match="multiple of 4"):
        vae.enable_slicing(encode_frames=6)
    with pytest.raises(ValueError, match="scheme"):
        vae.enable_slicing(scheme="chunks")
    with pytest.raises(ValueError, match="multiple of 8"):
        vae.enable_tiling(tile_size=100)
    with pytest.raises(ValueError, match="overlap"):
        vae.enable_tiling(tile_size=64, overlap=1.5)


def test_load_errors(tmp_path, vae):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SliceVAE.from_pretrained(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SliceVAE.from_pretrained(tmp_path / "bad")
    vae.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["latent_channels"] = 8
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="wrong shapes"):
        SliceVAE.from_pretrained(tmp_path / "m")
    cfg["spatial_group_norm"] = False
    cfg["_class_name"] = "AutoencoderKLMagvit"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="spatial_group_norm"):
        SliceVAE.from_pretrained(tmp_path / "m")


def test_init_posterior_logvar_shifts_only_the_log_variance():
    """The log-variance half of quant_conv's bias is set: every posterior log-variance moves by exactly
    the bias change (quant_conv is linear), the mean stays, and an unusable value is refused."""
    torch.manual_seed(0)
    vae = SliceVAE(SliceVAEConfig.tiny(block_out_channels=(8, 8, 16, 16), norm_num_groups=4)).eval()
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    c = vae.config.latent_channels
    old_bias = vae.quant_conv.bias.detach().clone()
    with torch.no_grad():
        before = vae.encode(x)
        vae.init_posterior_logvar(-6.0)
        after = vae.encode(x)
    torch.testing.assert_close(after.mean, before.mean, rtol=0, atol=0)
    shift = (-6.0 - old_bias[c:]).view(1, c, 1, 1, 1)
    torch.testing.assert_close(after.logvar, before.logvar + shift, rtol=0, atol=1e-5)
    assert after.std.mean() < 0.1 < before.std.mean()
    with pytest.raises(ValueError, match="clamp"):
        vae.init_posterior_logvar(-40.0)
