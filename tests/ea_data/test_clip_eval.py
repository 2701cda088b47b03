"""The clip evaluator against the demo world's ground truth: 100% on drawn clips, chance when shuffled."""

import numpy as np
import pytest

from ea_data.clip_eval import evaluate_clip, match_rates
from ea_data.synthetic import COLOR_NAMES, DEMO_SPEED, DIRECTIONS, HELD_OUT, demo_triples, render_demo_clip


def _video(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (3, F, H, W) in [-1, 1], the generator's output convention."""
    return frames.transpose(3, 0, 1, 2).astype(np.float32) / 127.5 - 1


@pytest.fixture(scope="module")
def truth_clips():
    rng = np.random.default_rng(0)
    train = demo_triples()
    triples = list(HELD_OUT) + [train[i] for i in rng.choice(len(train), 48, replace=False)]
    return [(t, _video(render_demo_clip(*t, num_frames=9, size=32, seed=i))) for i, t in enumerate(triples)]


def test_ground_truth_scores_100_percent(truth_clips):
    results = [evaluate_clip(v, c, d) for (c, _, d), v in truth_clips]
    assert match_rates(results) == {"color": 1.0, "direction": 1.0, "both": 1.0, "n": len(truth_clips)}
    # The measured speed is the drawn one (frame sides per frame), within the centroid's pixel rounding.
    speeds = np.array([r["speed"] for r in results])
    assert np.abs(speeds - DEMO_SPEED).max() < 0.25 * DEMO_SPEED


def test_shuffled_directions_score_near_chance(truth_clips):
    rng = np.random.default_rng(1)
    asked = rng.choice(DIRECTIONS, size=len(truth_clips))
    results = [evaluate_clip(v, c, str(d)) for ((c, _, _), v), d in zip(truth_clips, asked)]
    rate = match_rates(results)["direction"]
    assert 0.1 <= rate <= 0.45, rate  # chance is 0.25 (64 clips: a 95 % band is about 0.15-0.36)


def test_wrong_colour_is_absent(truth_clips):
    names = list(COLOR_NAMES)
    results = [evaluate_clip(v, names[(names.index(c) + 3) % len(names)], d) for (c, _, d), v in truth_clips]
    assert match_rates(results)["color"] == 0.0
    assert all(r["direction"] is None for r in results)


def test_static_and_empty_clips():
    frames = render_demo_clip("red", "circle", "left", num_frames=9, size=32)
    still = np.repeat(frames[:1], 9, axis=0)
    r = evaluate_clip(_video(still), "red", "left")
    assert r["color_present"] and r["direction"] is None and r["direction_match"] is False
    noise = np.random.default_rng(0).uniform(-1, 1, (3, 9, 32, 32))
    assert not evaluate_clip(noise, "red")["color_present"]


def test_torch_input_and_bad_shapes():
    torch = pytest.importorskip("torch")
    v = torch.from_numpy(_video(render_demo_clip("blue", "square", "down", num_frames=9, size=32, seed=3)))
    assert evaluate_clip(v, "blue", "down")["direction_match"] is True
    with pytest.raises(ValueError, match=r"\(3, F, H, W\)"):
        evaluate_clip(v[0], "blue", "down")
    with pytest.raises(ValueError, match="unknown colour"):
        evaluate_clip(v, "magenta", "down")
    with pytest.raises(ValueError, match="unknown direction"):
        evaluate_clip(v, "blue", "sideways")
