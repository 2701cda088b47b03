"""TextToVideoPipeline: the whole path (text -> CFG -> sampler -> latent scaling -> decode) with an oracle
denoiser whose answer is known, per-video seeds, and input checks. The VAE is a duck-typed stand-in."""

import json
from types import SimpleNamespace

import pytest
import torch

from ea_dit import TextToVideoPipeline, VideoDiT, VideoDiTConfig
from ea_dit.diffusion import GaussianDiffusion
from ea_dit.samplers import SAMPLERS
from ea_dit.t2v import decode_latents, encode_latents, read_run_folder

SCALE = 0.25


class FakeVAE:
    """Decodes by nearest upsampling (x4 in time after the first frame, x8 in space); remembers its input."""

    config = SimpleNamespace(latent_channels=4, spatial_compression=8, temporal_compression=4, scaling_factor=SCALE)

    def decode(self, z):
        self.seen = z
        first, rest = z[:, :1, :1], z[:, :1, 1:].repeat_interleave(4, dim=2)
        return torch.cat([first, rest], 2).repeat(1, 3, 1, 1, 1).repeat_interleave(8, 3).repeat_interleave(8, 4)

    def encode(self, video):
        return SimpleNamespace(sample=lambda g=None: video[:, :1].expand(-1, 4, -1, -1, -1) + 1.0)


def text_encoder(prompts):
    """Prompt -> one embedding token holding the prompt's length: the conditional branch differs."""
    embeds = torch.tensor([[float(len(p))] * 8 for p in prompts]).unsqueeze(1)
    return embeds, torch.ones(len(prompts), 1, dtype=torch.long)


class OracleDiT(torch.nn.Module):
    """The exact noise for data that is a point mass at `target(prompt)`; the unconditional branch
    (empty prompt) sees target 0. With CFG scale w the samplers then land on w * target."""

    config = SimpleNamespace(in_channels=4, patch_size=1, motion_grid=1, motion_module=False, sample_size=2)

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.schedule = GaussianDiffusion()

    device = property(lambda self: self.anchor.device)
    dtype = property(lambda self: self.anchor.dtype)

    def forward(self, x, t, text_embeds, text_mask):
        target = 0.1 * text_embeds[:, 0, 0].view(-1, 1, 1, 1, 1)
        abar = self.schedule.alphas_cumprod[t].to(x.dtype).view(-1, 1, 1, 1, 1)
        eps = (x - abar.sqrt() * target) / (1 - abar).sqrt()
        return torch.cat([eps, -torch.ones_like(eps)], 1)


class OracleVDiT(OracleDiT):
    """OracleDiT's exact answer written as v = alpha eps - sigma x0 (a v-prediction model)."""

    config = SimpleNamespace(**{**vars(OracleDiT.config), "prediction_type": "v_prediction"})

    def forward(self, x, t, text_embeds, text_mask):
        target = 0.1 * text_embeds[:, 0, 0].view(-1, 1, 1, 1, 1)
        abar = self.schedule.alphas_cumprod[t].to(x.dtype).view(-1, 1, 1, 1, 1)
        eps = (x - abar.sqrt() * target) / (1 - abar).sqrt()
        return torch.cat([abar.sqrt() * eps - (1 - abar).sqrt() * target, -torch.ones_like(eps)], 1)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("dit_class", [OracleDiT, OracleVDiT])
def test_pipeline_lands_on_the_guided_target_and_decodes_unscaled(sampler, dit_class):
    vae = FakeVAE()
    pipe = TextToVideoPipeline(dit_class(), vae, text_encoder)
    video = pipe(["ab", "abcd"], num_frames=5, height=16, width=8, steps=8, guidance_scale=2.0, sampler=sampler)
    assert video.shape == (2, 3, 5, 16, 8) and video.dtype == torch.float32
    # eps_guided = eps_u + 2 (eps_c - eps_u) is the exact noise of a point mass at 2 * target.
    expected = torch.tensor([2 * 0.1 * 2, 2 * 0.1 * 4]).view(2, 1, 1, 1, 1) / SCALE
    torch.testing.assert_close(vae.seen, expected.expand(2, 4, 2, 2, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(video, (expected.expand_as(video)).clamp(-1, 1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
def test_guidance_scale(scale):
    # 0: the unconditional model (target 0); 1: the conditional one alone; w: w * target.
    vae = FakeVAE()
    pipe = TextToVideoPipeline(OracleDiT(), vae, text_encoder)
    latents = pipe.generate_latents(["abc"], 1, 8, 8, steps=6, guidance_scale=scale, sampler="dpmpp_2m")
    torch.testing.assert_close(latents, torch.full_like(latents, scale * 0.3), atol=1e-4, rtol=0)


def test_latent_scaling_has_one_owner():
    vae = FakeVAE()
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    latents = encode_latents(vae, video)
    torch.testing.assert_close(latents, (video[:, :1].expand(-1, 4, -1, -1, -1) + 1.0) * SCALE)
    decode_latents(vae, latents)
    torch.testing.assert_close(vae.seen, latents / SCALE)


def test_a_prompt_and_seed_give_the_same_video_alone_or_in_a_batch():
    torch.manual_seed(0)
    dit = VideoDiT(VideoDiTConfig.tiny(caption_channels=8, sample_size=4)).eval()
    with torch.no_grad():  # a fresh DiT's output layer is zero: give it an output that depends on everything
        for p in dit.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    pipe = TextToVideoPipeline(dit, FakeVAE(), text_encoder)
    kw = {"num_frames": 1, "height": 32, "width": 32, "steps": 2}
    pair = pipe.generate_latents(["a", "bbb"], seed=[7, 11], **kw)
    alone = pipe.generate_latents(["bbb"], seed=11, **kw)
    # Batch size changes the fp32 summation order (~1e-7 relative), and x0 = (x - sigma eps) / alpha
    # multiplies that by up to 1 / alpha_999 ~ 160 on the first step.
    tol = {"atol": 1e-3, "rtol": 0}
    torch.testing.assert_close(alone[0], pair[1], **tol)
    assert (pipe.generate_latents(["bbb"], seed=12, **kw) - alone).abs().max() > 0.1
    # An int seed means seed + i for video i.
    torch.testing.assert_close(pipe.generate_latents(["a", "bbb"], seed=7, **kw)[1], pipe.generate_latents(
        ["bbb"], seed=8, **kw)[0], **tol)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_frames": 6}, "1 \\+ 4k frames"), ({"num_frames": 0}, "positive integer"), ({"height": 12}, "multiples of 8"),
    ({"height": -8}, "positive integer"), ({"sampler": "plms"}, "sampler must be one of"),
    ({"guidance_scale": -1.0}, "guidance_scale"), ({"seed": [1, 2, 3]}, "3 seeds for 2 prompts")])
def test_pipeline_rejects_bad_requests(kwargs, message):
    pipe = TextToVideoPipeline(OracleDiT(), FakeVAE(), text_encoder)
    args = {"num_frames": 5, "height": 16, "width": 16, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe.generate_latents(["a", "b"], **args)


def test_pipeline_checks_latent_channels():
    vae = FakeVAE()
    vae.config = SimpleNamespace(**{**vars(FakeVAE.config), "latent_channels": 16})
    with pytest.raises(ValueError, match="takes 4 latent channels but the VAE makes 16"):
        TextToVideoPipeline(OracleDiT(), vae, text_encoder)


def test_read_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "dit").mkdir(parents=True)
    (run / "dit" / "config.json").write_text(json.dumps({"frames": 9, "size": 64, "text_encoder": "t5-small"}))
    # The trainers' layout; the text encoder recorded by train_dit when the folder has none.
    assert read_run_folder(run) == {"dit": run / "dit" / "final", "vae": run / "vae" / "final",
                                    "text_encoder": "t5-small", "frames": 9, "height": 64, "width": 64}
    (run / "text_encoder").mkdir()
    (run / "models" / "vae").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"vae": "models/vae", "frames": 5, "width": 96, "fps": 12,
                                              "sampler": "ddim", "steps": 25, "guidance_scale": 4.0}))
    got = read_run_folder(run)
    assert (got["sampler"], got["steps"], got["guidance_scale"]) == ("ddim", 25, 4.0)
    assert got["text_encoder"] == run / "text_encoder" and got["vae"] == run / "models" / "vae"
    assert (got["frames"], got["height"], got["width"], got["fps"]) == (5, 64, 96, 12)
    (run / "run.json").write_text(json.dumps({"height": -3}))
    with pytest.raises(ValueError, match="run.json: height must be a positive number, got -3"):
        read_run_folder(run)
    for bad in ({"sampler": "plms"}, {"steps": 2.5}, {"guidance_scale": -1}):
        (run / "run.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=f"run.json: {next(iter(bad))}"):
            read_run_folder(run)
    (run / "run.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="run.json: not valid JSON"):
        read_run_folder(run)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_run_folder(tmp_path / "missing")
