"""Reward backpropagation: the gradient-carrying sampler against the plain one and a hand-written
reference, gradients only at the chosen steps, and a tiny DiT whose reward rises under training."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from ea_dit import GaussianDiffusion, VideoDiT, VideoDiTConfig
from ea_dit.diffusion import DiffusionConfig, classifier_free_guidance
from ea_dit.reward_backprop import choose_grad_steps, reward_loss, sample_ddim_with_grad
from ea_dit.samplers import _timesteps, sample_ddim


def test_choose_grad_steps():
    assert choose_grad_steps(10, "last") == [9]
    assert choose_grad_steps(10, "last_k", k=3) == [7, 8, 9]
    steps = choose_grad_steps(10, "random", k=2, generator=random.Random(0))
    assert len(set(steps)) == 2 and all(0 <= s < 10 for s in steps)
    with pytest.raises(ValueError, match="unknown"):
        choose_grad_steps(10, "uniform")
    with pytest.raises(ValueError, match="k = 11"):
        choose_grad_steps(10, "last_k", k=11)


class PerStepModel(nn.Module):
    """eps(x, t) = tanh(w[t] * x): one parameter per timestep, so gradients show which steps were differentiated."""

    def __init__(self, num_timesteps: int):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, num_timesteps, dtype=torch.float64))

    def forward(self, x, t):
        return torch.tanh(self.w[t].view(-1, *[1] * (x.dim() - 1)) * x)


def _reference_ddim(model, x, schedule, ts, constant_at):
    """Plain DDIM written out; at the `constant_at` timesteps the prediction is a constant (no graph)."""
    abar = schedule.alphas_cumprod.double()
    for t, t_next in zip(ts, [*ts[1:], -1]):
        tt = torch.full((x.shape[0],), t)
        eps = model(x.detach(), tt).detach() if t in constant_at else model(x, tt)
        a, s = abar[t].sqrt(), (1 - abar[t]).sqrt()
        a_n, s_n = (abar[t_next].sqrt(), (1 - abar[t_next]).sqrt()) if t_next >= 0 else (1.0, 0.0)
        x = a_n * (x - s * eps) / a + s_n * eps
    return x


@pytest.mark.parametrize("strategy,k", [("last", 1), ("last_k", 3), ("random", 2)])
def test_gradients_reach_only_the_chosen_steps(strategy, k):
    schedule = GaussianDiffusion(DiffusionConfig(num_timesteps=100))
    model = PerStepModel(100)
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    steps = 6
    chosen = choose_grad_steps(steps, strategy, k, generator=random.Random(1))
    x0 = sample_ddim_with_grad(model, x, schedule, steps, grad_steps=chosen)
    x0.square().sum().backward()
    grad = model.w.grad.clone()
    ts = _timesteps(schedule, steps, None)
    touched = {ts[i] for i in chosen}
    assert {int(i) for i in grad.nonzero().flatten()} == touched
    # values: the same loss through a hand-written DDIM with the other steps' parameters detached
    model.w.grad = None
    ref = _reference_ddim(model, x, schedule, ts, constant_at=set(ts) - touched)
    torch.testing.assert_close(x0, ref, rtol=1e-12, atol=1e-12)
    ref.square().sum().backward()
    torch.testing.assert_close(grad, model.w.grad, rtol=1e-10, atol=1e-12)


def test_without_gradients_equals_plain_ddim():
    schedule = GaussianDiffusion(DiffusionConfig(num_timesteps=100))
    model = PerStepModel(100)
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = sample_ddim_with_grad(model, x, schedule, 7, grad_steps=[-1])
    torch.testing.assert_close(got, sample_ddim(model, x, schedule, 7, eta=0.0), rtol=1e-12, atol=1e-12)


def test_reward_loss():
    r = torch.tensor([8.0, 11.0])
    assert reward_loss(r, 10.0, scale=0.1).item() == pytest.approx(0.15)
    with pytest.raises(TypeError):
        reward_loss(torch.tensor([1, 2]), 1.0)


def _tiny_dit():
    torch.manual_seed(0)
    model = VideoDiT(VideoDiTConfig.tiny(learn_sigma=False))
    with torch.no_grad():  # a "pretrained" model: no zero layers, so every parameter is live
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def test_tiny_dit_reward_rises_and_only_chosen_parameters_change():
    """Fixed tiny reward: closeness of latent channel 0 of the generated sample to 0.5 (max 0). Training
    only the output layer and the cross-attention output projections, with gradients through the last 2 of 4 CFG steps."""
    model = _tiny_dit()
    model.enable_gradient_checkpointing()
    schedule = GaussianDiffusion(DiffusionConfig(num_timesteps=1000))
    g = torch.Generator().manual_seed(0)
    text = torch.randn(2, 5, 32, generator=g)
    cond = {"text_embeds": text, "text_mask": torch.ones(2, 5, dtype=torch.bool)}
    uncond = {"text_embeds": torch.zeros_like(text), "text_mask": torch.ones(2, 5, dtype=torch.bool)}
    denoiser = classifier_free_guidance(model, 3.0, cond, uncond)

    def reward(x0):
        return -(x0[:, 0] - 0.5).square().mean(dim=(1, 2, 3))

    held_out = torch.randn(2, 4, 2, 8, 8, generator=torch.Generator().manual_seed(123))
    # a short schedule from t = 400: the untrained tiny model's x0 stays O(1) there (from t = 999 the
    # x0 of a poor noise prediction is amplified by 1/sqrt(abar) ~ 160)
    ts = [400, 300, 200, 100]

    def held_out_reward():
        with torch.no_grad():
            return reward(sample_ddim_with_grad(denoiser, held_out, schedule, timesteps=ts)).mean().item()

    trained = [*model.final_layer.linear.parameters(), *(p for b in model.blocks for p in b.cross_attn.proj.parameters())]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trained, lr=1e-2)
    start = held_out_reward()
    for step in range(6):
        x = torch.randn(2, 4, 2, 8, 8, generator=torch.Generator().manual_seed(step))
        x0 = sample_ddim_with_grad(denoiser, x, schedule, timesteps=ts, grad_steps=choose_grad_steps(4, "last_k", 2))
        loss = reward_loss(reward(x0), max_reward=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = held_out_reward()
    assert end > start + 0.2 * abs(start), (start, end)
    trained_ids = {id(p) for p in trained}
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (id(p) in trained_ids), name
