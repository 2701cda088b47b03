"""Spatial tiling: tile layout, blending weights, and tiled encode/decode through SliceVAE."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ea_vae import SliceVAE, SliceVAEConfig
from ea_vae.stream import StreamCache
from ea_vae.tiling import make_tiles, tile_spans


@pytest.mark.parametrize("length,tile,overlap", [(10, 4, 1), (12, 4, 1), (7, 4, 2), (3, 4, 1), (33, 8, 2)])
def test_tile_spans_cover_with_overlap(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert a1 - a0 == tile and b1 - b0 == tile
        assert a1 - b0 >= overlap and b0 > a0  # overlapping neighbours, moving forward


def test_blend_weights_sum_to_one_and_ramp_linearly():
    tiles = make_tiles(10, 13, tile=4, overlap=2, in_scale=1, out_scale=8)
    total = torch.zeros(80, 104)
    for t in tiles:
        total[t.out_y[0] : t.out_y[1], t.out_x[0] : t.out_x[1]] += t.weight
        assert (t.weight > 0).all()
    torch.testing.assert_close(total, torch.ones(80, 104))
    # between the first two tiles along x (overlap 16 px, starting at 16) the weight ramps down linearly
    first = tiles[0].weight[0, 16:32]
    steps = first[1:] - first[:-1]
    torch.testing.assert_close(steps, torch.full_like(steps, steps[0].item()))
    assert steps[0] < 0


class PixelDecoder(nn.Module):
    """A decoder with no spatial context: each latent pixel becomes an 8x8 block, each latent 4 frames
    (1 for the video's first latent). Tiled decoding of it must be exact."""

    def forward(self, z, cache: StreamCache):  # z: (B, T, C, h, w) frames-first
        y = z[:, :, :3].repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        first = not cache.continuing and self not in cache.started
        cache.started.add(self)
        if first:
            return torch.cat([y[:, :1], y[:, 1:].repeat_interleave(4, dim=1)], 1)
        return y.repeat_interleave(4, dim=1)


class PixelEncoder(nn.Module):
    """An encoder with no context beyond 8x8 blocks: block means, frame 0 alone then every 4th frame."""

    def forward(self, x, cache: StreamCache):  # x: (B, T, 3, H, W)
        b, t = x.shape[:2]
        m = F.avg_pool2d(x.flatten(0, 1), 8).unflatten(0, (b, t))
        first = self not in cache.started
        cache.started.add(self)
        m = torch.cat([m[:, :1], m[:, 4::4]], 1) if first else m[:, 3::4]
        return torch.cat([m, m.pow(2), m[:, :, :2]], 2)  # 8 channels: mean and log-variance of 4 latents


def pixel_vae():
    vae = SliceVAE(SliceVAEConfig.tiny(latent_channels=4))
    vae.decoder = PixelDecoder()
    with torch.no_grad():
        vae.post_quant_conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1, 1))
        vae.post_quant_conv.bias.zero_()
    return vae


def test_tiled_decode_blends_exactly_for_a_context_free_decoder():
    vae = pixel_vae()
    z = torch.randn(1, 4, 3, 10, 13)
    full = vae.decode(z)
    assert full.shape == (1, 3, 9, 80, 104)
    torch.testing.assert_close(full, z[:, :3].repeat_interleave(8, 3).repeat_interleave(8, 4)[:, :, [0, 1, 1, 1, 1, 2, 2, 2, 2]])
    for tile, overlap in [(32, 0.25), (32, 0.5), (48, 0.25)]:
        vae.enable_tiling(tile_size=tile, overlap=overlap)
        torch.testing.assert_close(vae.decode(z), full)
        vae.enable_slicing(decode_latents=1)
        torch.testing.assert_close(vae.decode(z), full)
        vae.disable_slicing()


def test_tiled_encode_blends_exactly_for_a_context_free_encoder():
    vae = SliceVAE(SliceVAEConfig.tiny(latent_channels=4))
    vae.encoder = PixelEncoder()
    x = torch.rand(1, 3, 9, 80, 104) * 2 - 1
    with torch.no_grad():
        full = vae.encode(x)
        assert full.mean.shape == (1, 4, 3, 10, 13)
        for tile, overlap in [(32, 0.25), (48, 0.5)]:
            vae.enable_tiling(tile_size=tile, overlap=overlap)
            tiled = vae.encode(x)
            torch.testing.assert_close(tiled.mean, full.mean)
            torch.testing.assert_close(tiled.logvar, full.logvar)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return SliceVAE(SliceVAEConfig.tiny()).eval()


def test_tiled_real_model_is_a_blend_of_tile_decodes(vae):
    """Tiled decode == per-tile decodes (each run untiled on its latent crop) blended with linear ramps
    written out here: tiles of 4 latents, 1-latent overlap -> 8-pixel ramps."""
    z = torch.randn(1, 4, 2, 4, 7)  # width 7 latents: tiles at x = 0, 3 (overlap 1)
    with torch.no_grad():
        a = vae.decode(z[..., 0:4])
        b = vae.decode(z[..., 3:7])
        vae.enable_tiling(tile_size=32, overlap=0.25)
        tiled = vae.decode(z)
        vae.disable_tiling()
    ramp_up = torch.arange(1, 9, dtype=torch.float32) / 9  # 1/9 .. 8/9 over the 8 shared pixels
    expected = torch.empty_like(tiled)
    expected[..., :24] = a[..., :24]
    expected[..., 32:] = b[..., 8:]
    expected[..., 24:32] = a[..., 24:32] * (1 - ramp_up) + b[..., 0:8] * ramp_up
    torch.testing.assert_close(tiled, expected)


def test_tiling_converges_to_untiled(vae):
    z = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = vae.decode(z)
        errors = []
        for tile in (32, 48, 56, 64):
            vae.enable_tiling(tile_size=tile, overlap=0.5)
            errors.append(((vae.decode(z) - full).abs().mean() / full.abs().mean()).item())
        vae.disable_tiling()
    assert errors[-1] == 0.0  # one tile covers the frame
    assert errors[0] > errors[1] > errors[2] > 0


def test_sliced_and_tiled_equals_tiled(vae):
    x = torch.rand(1, 3, 9, 48, 64) * 2 - 1
    with torch.no_grad():
        vae.enable_tiling(tile_size=32, overlap=0.25)
        enc = vae.encode(x).mean
        dec = vae.decode(enc)
        vae.enable_slicing(encode_frames=4, decode_latents=1)
        torch.testing.assert_close(vae.encode(x).mean, enc, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(vae.decode(enc), dec, atol=1e-5, rtol=1e-5)
        vae.disable_slicing()
        vae.disable_tiling()
