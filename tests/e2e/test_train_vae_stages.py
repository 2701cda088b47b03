"""train_vae --stage decoder --slicing: the encoder stays frozen and the decoder trains through slices."""

import pytest
import torch
from safetensors.torch import load_file

from .conftest import load_app


def test_sliced_decode_backpropagates_like_unsliced():
    """Streaming slices are exact, so their gradients equal the unsliced ones; shared-feature slices differ
    (by design) but still reach every decoder parameter."""
    from ea_vae import SliceVAE, SliceVAEConfig

    torch.manual_seed(0)
    vae = SliceVAE(SliceVAEConfig.tiny(block_out_channels=(8, 8, 16, 16), norm_num_groups=4)).train()
    x = torch.randn(1, 3, 9, 16, 16)
    z = vae.encode(x).mean.detach()

    def grads():
        vae.zero_grad(set_to_none=True)
        vae.decode(z).square().mean().backward()
        return {n: p.grad.clone() for n, p in vae.decoder.named_parameters()}

    ref = grads()
    vae.enable_slicing(decode_latents=1, scheme="streaming")
    streaming = grads()
    for n in ref:  # same sums in another order: float32 rounding only
        torch.testing.assert_close(streaming[n], ref[n], rtol=1e-4, atol=1e-6, msg=n)
    vae.enable_slicing(decode_latents=1, scheme="shared")
    shared = grads()
    assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in shared.values())


@pytest.mark.slow
def test_train_vae_decoder_stage_with_slicing(tmp_path, tiny_shards, tiny_models):
    app = load_app("train_vae")
    cfg = app.parse_args(["--data", str(tiny_shards), "--vae", str(tiny_models["vae"]), "--out", str(tmp_path / "run"),
                          "--steps", "1", "--size", "32", "--frames", "5", "--stage", "decoder", "--slicing", "shared",
                          "--no-tensorboard", "--lr", "1e-3"])
    final = app.train(cfg)
    before, after = load_file(tiny_models["vae"] / "model.safetensors"), load_file(final / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(not k.startswith(("encoder.", "quant_conv.")) for k in changed), sorted(
        k for k in changed if k.startswith(("encoder.", "quant_conv.")))
    assert any(k.startswith("decoder.") for k in changed)


@pytest.mark.slow
def test_train_vae_cosine_schedule_follows_the_closed_form(tmp_path, tiny_shards, tiny_models):
    """--lr-schedule cosine --warmup-steps 1: linear warm-up, then half a cosine to 0 at --steps (logged lr)."""
    import json
    import math

    app = load_app("train_vae")
    cfg = app.parse_args(["--data", str(tiny_shards), "--vae", str(tiny_models["vae"]), "--out", str(tmp_path / "run"),
                          "--steps", "4", "--size", "32", "--frames", "5", "--no-tensorboard", "--lr", "1e-3",
                          "--lr-schedule", "cosine", "--warmup-steps", "1", "--log-every", "1"])
    app.train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # the lr of the update that ends at logged step s is the schedule at step s - 1 (0-based)
    expected = [1e-3] + [1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 3)) for s in (2, 3, 4)]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r, e in zip(rows, expected):
        assert math.isclose(r["lr"], e, rel_tol=1e-9, abs_tol=1e-15), (r["lr"], e)


@pytest.mark.slow
def test_train_vae_wsd_schedule_and_posterior_logvar_init(tmp_path, tiny_shards, tiny_models):
    """--lr-schedule wsd --decay-fraction 0.5: the full LR for the first half of the run, then linear to 0
    (logged lr). The run is a time limit already passed after its first step with --min-steps 4 (of
    --steps 8): it stops at step 4, and its schedule follows those 4 steps. --posterior-logvar-init -6
    starts the posterior's log-variance bias there (Adam's 4 steps of 1e-3 move it by at most ~4e-3)."""
    import json
    import math

    app = load_app("train_vae")
    cfg = app.parse_args(["--data", str(tiny_shards), "--vae", str(tiny_models["vae"]), "--out", str(tmp_path / "run"),
                          "--steps", "8", "--size", "32", "--frames", "5", "--no-tensorboard", "--lr", "1e-3",
                          "--lr-schedule", "wsd", "--decay-fraction", "0.5", "--log-every", "1",
                          "--posterior-logvar-init", "-6", "--time-limit", "1e-6", "--min-steps", "4"])
    assert app.run_progress(cfg, 2, elapsed=1.0) == 0.5  # the steps behind the time: they set the pace
    fast = app.parse_args(["--steps", "100", "--time-limit", "10", "--min-steps", "4"])
    assert app.run_progress(fast, 3, elapsed=5.0) == 0.5  # time behind the min steps: it sets the pace
    assert app.run_progress(fast, 50, elapsed=1.0) == 0.5  # --steps further along than the time limit
    final = app.train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # progress of the update ending at logged step s is (s - 1) / 4: 0, 0.25, 0.5 (last full), 0.75 (half)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r, e in zip(rows, [1e-3, 1e-3, 1e-3, 5e-4]):
        assert math.isclose(r["lr"], e, rel_tol=1e-9), (r["lr"], e)
    bias = load_file(final / "model.safetensors")["quant_conv.bias"]
    c = bias.numel() // 2
    assert (bias[c:] + 6).abs().max() < 0.02, bias
    assert (bias[:c] + 6).abs().min() > 1, bias  # the mean half is untouched
