"""The demo world's differentiable reward: a small video classifier of colour and direction.

Trained on generator clips of the training triples and checked on clips of the HELD_OUT triples (other
colour / shape / direction combinations), against the generator's ground truth.
"""

import numpy as np
import pytest
import torch

from ea_data.scoring.rewards import load_reward
from ea_data.scoring.world_reward import (
    WorldClassifier,
    WorldClassifierConfig,
    WorldReward,
    save_world_reward,
    train_world_classifier,
    world_targets,
)
from ea_data.synthetic import (
    COLOR_NAMES,
    DIRECTIONS,
    HELD_OUT,
    SHAPES,
    demo_caption,
    demo_triples,
    parse_demo_caption,
    render_demo_clip,
)

SIZE, FRAMES, STRIDE = 16, 5, 4
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def _clips(triples, seed):
    """Ground-truth clips `(N, 3, FRAMES, SIZE, SIZE)` in [-1, 1], every STRIDE-th frame, and their captions."""
    x = [torch.from_numpy(render_demo_clip(*t, num_frames=1 + (FRAMES - 1) * STRIDE, size=SIZE,
                                           seed=seed * 10007 + i)[::STRIDE]) for i, t in enumerate(triples)]
    return torch.stack(x).permute(0, 4, 1, 2, 3).float() / 127.5 - 1, [demo_caption(*t) for t in triples]


def _batches(seed=0, batch=32):
    rng = np.random.default_rng(seed)
    train = demo_triples()
    for step in range(10**9):
        pick = [train[i] for i in rng.choice(len(train), batch)]
        yield _clips(pick, seed=step + 1)


def test_parse_demo_caption_inverts_demo_caption():
    for t in [(c, s, d) for c in COLOR_NAMES for s in SHAPES for d in DIRECTIONS]:
        assert parse_demo_caption(demo_caption(*t)) == t
    assert parse_demo_caption('a red star moves up under the text "OPEN SALE"') == ("red", "star", "up")
    assert parse_demo_caption("A red star moves up.") == ("red", "star", "up")
    for bad in ("a red star rests", "a pink star moves up", "red star moves up", ""):
        with pytest.raises(ValueError, match="not a demo caption"):
            parse_demo_caption(bad)


def test_targets_remove_the_object_and_the_motion():
    x, prompts = _clips(HELD_OUT[:4], seed=3)
    cfg = WorldClassifierConfig()
    inputs, tc, td = world_targets(x, prompts, cfg)
    assert inputs.shape == (12, 3, FRAMES, SIZE, SIZE) and tc.shape == (12, 8) and td.shape == (12, 4)
    assert torch.equal(inputs[:4], x) and (inputs[8:] == x[:, :, :1]).all()  # frozen: the first frame
    assert torch.allclose(tc[4:8], torch.full((4, 8), 1 / 8)) and torch.allclose(td[4:], torch.full((8, 4), 0.25))
    assert torch.equal(tc[8:], tc[:4]) and (tc[:4].argmax(-1) == torch.tensor(
        [list(COLOR_NAMES).index(c) for c, _, _ in HELD_OUT[:4]])).all()
    # the object-free clip is the background: it differs from the clip only where the object passes
    assert (inputs[4:8] != x).float().mean() < 0.2


@pytest.mark.slow
def test_classifier_learns_colour_and_direction_and_rewards_what_is_asked(tmp_path):
    model = train_world_classifier(_batches(), steps=400, log=None)
    x, prompts = _clips(HELD_OUT * 2, seed=99)  # combinations never trained on
    with torch.no_grad():
        colour_logits, direction_logits = model(x)
    cfg = model.config
    colour_acc = np.mean([cfg.colors[i] == t[0] for i, t in zip(colour_logits.argmax(-1).tolist(), HELD_OUT * 2)])
    direction_acc = np.mean([cfg.directions[i] == t[2]
                             for i, t in zip(direction_logits.argmax(-1).tolist(), HELD_OUT * 2)])
    assert colour_acc >= 0.9 and direction_acc >= 0.9, (colour_acc, direction_acc)

    reward = load_reward(save_world_reward(model, tmp_path / "reward"))
    assert isinstance(reward, WorldReward) and reward.scores_video and reward.max_reward == 1.0
    with torch.no_grad():
        asked = reward(x, prompts)
        wrong_direction = reward(x, [demo_caption(c, s, OPPOSITE[d]) for c, s, d in HELD_OUT * 2])
        empty = reward(x.median(dim=2, keepdim=True).values.expand_as(x), prompts)
        frozen = reward(x[:, :, :1].expand_as(x), prompts)
        torch.testing.assert_close(asked, WorldReward(model)(x, prompts))  # the saved weights
    print(f"reward: asked {asked.mean():.3f}, wrong direction {wrong_direction.mean():.3f}, "
          f"empty {empty.mean():.3f}, frozen {frozen.mean():.3f}")
    # measured (400 steps): asked 0.77, wrong direction 0.45, empty 0.28, frozen 0.57
    assert asked.mean() > 0.7
    assert wrong_direction.mean() < asked.mean() - 0.2  # the direction half is lost
    assert empty.mean() < 0.35  # (1/8 + 1/4) / 2 = 0.19 for a classifier that sees nothing there
    assert frozen.mean() < asked.mean() - 0.12  # no motion, no direction reward

    # differentiable in the pixels: reward backpropagation can push a clip towards what is asked
    v = x[:2].clone().requires_grad_(True)
    reward(v, prompts[:2]).sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_classifier_checks_its_input():
    with pytest.raises(ValueError, match=r"expected videos \(B, 3, F, H, W\) with F >= 2"):
        WorldClassifier()(torch.zeros(1, 3, 1, 16, 16))
    with pytest.raises(ValueError, match="2 videos but 1 prompts"):
        WorldReward(WorldClassifier())(torch.zeros(2, 3, 5, 16, 16), ["a red star moves up"])
    with pytest.raises(ValueError, match="channels"):
        WorldClassifierConfig(channels=(16,))


def test_color_coverage_is_the_evaluators_colour_criterion_made_soft():
    from ea_data.clip_eval import color_masks
    from ea_data.scoring.world_reward import color_coverage

    x, prompts = _clips(HELD_OUT, seed=5)
    colours = [c for c, _, _ in HELD_OUT]
    # near-hard membership: the capped count of clip_eval's colour pixels (numpy, an independent reference)
    hard = color_coverage(x, colours, pixels=4.0, softness=1e-3)
    ref = [np.minimum(color_masks(v.numpy(), c).sum(axis=(1, 2)) / 4.0, 1).mean() for v, c in zip(x, colours)]
    np.testing.assert_allclose(hard.numpy(), ref, atol=1e-4)
    # the generator's clips show their colour in every frame; a clip of the background alone does not
    assert (color_coverage(x, colours) > 0.95).all()
    background = torch.full_like(x, -0.6)  # dark grey, as the world's backgrounds
    assert (color_coverage(background, colours) < 0.02).all()  # 256 pixels >= 80 units beyond the tolerance
    # another colour than the object's: its far colours earn (almost) nothing
    far = {"red": "cyan", "green": "purple", "blue": "yellow", "yellow": "blue", "purple": "green",
           "orange": "blue", "cyan": "red", "white": "blue"}
    assert (color_coverage(x, [far[c] for c in colours]) < 0.05).all()
    # a faded object (half background) earns part, and the gradient points towards the asked colour
    faded = (0.5 * x + 0.5 * background).requires_grad_(True)
    cov = color_coverage(faded, colours)
    assert (cov < 0.9).any()
    cov.sum().backward()
    step = (faded + 0.05 * faded.grad / faded.grad.abs().amax()).detach()
    assert color_coverage(step, colours).sum() > cov.sum() + 0.1
    with pytest.raises(ValueError, match="unknown colours"):
        color_coverage(x[:1], ["pink"])


def test_world_reward_adds_coverage_and_saves_its_settings(tmp_path):
    from ea_data.scoring.world_reward import color_coverage

    torch.manual_seed(0)
    model = WorldClassifier(WorldClassifierConfig(channels=(4, 8)))
    x, prompts = _clips(HELD_OUT[:4], seed=2)
    plain = WorldReward(model)(x, prompts)
    with_cov = load_reward(save_world_reward(model, tmp_path / "r", coverage_weight=2.0, coverage_pixels=3.0))
    assert with_cov.coverage_weight == 2.0 and with_cov.coverage_pixels == 3.0
    cov = color_coverage(x, [c for c, _, _ in HELD_OUT[:4]], pixels=3.0)
    with torch.no_grad():
        torch.testing.assert_close(with_cov(x, prompts), (2 * plain + 2 * cov) / 4)
    with pytest.raises(ValueError, match="coverage_weight"):
        WorldReward(model, coverage_weight=-1)
