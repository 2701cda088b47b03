"""Clip scores measured on generated videos: motion order and speed, OCR text area, single-decode sharing."""

import logging

import numpy as np
import pytest

from ea_data import build_scorers, score_clip, split_and_score
from ea_data.scoring.frames import GridSampler, sample_clip_frames
from ea_data.synthetic import SceneSpec, make_video
from ea_vae.video_io import VideoReadError, iter_frames

FPS = 10.0


@pytest.fixture(scope="module")
def motion_video(tmp_path_factory):
    """Static / slow / fast pans over trackable textures (two backgrounds), 4 s per scene, 160x120."""
    rng = np.random.default_rng(11)
    specs = []
    for bg in ("noise", "blobs"):
        for motion in ("static", "slow", "fast"):
            spec = SceneSpec.random(rng, 40, motion=motion, num_shapes=1)
            spec.background = bg
            specs.append(spec)
    return make_video(tmp_path_factory.mktemp("motion") / "m.mp4", specs, width=160, height=120, fps=FPS)


@pytest.mark.parametrize("flow, sample_fps, work_size", [("dis", 5.0, 256), ("farneback", 10.0, 128)])
def test_motion_order_static_slow_fast(motion_video, flow, sample_fps, work_size):
    # Farneback loses track of these fine textures beyond a few px per step: every frame, at 128 px.
    scorers = build_scorers(("motion",), opencv_flow=flow, motion_work_size=work_size)
    for k in (0, 3):
        scores = [score_clip(motion_video.path, s.start_time, s.end_time, scorers, sample_fps)["motion_score"]
                  for s in motion_video.scenes[k:k + 3]]
        static, slow, fast = scores
        assert static < 0.05 and static < slow < fast, (flow, scores)


def test_dis_motion_speed_in_documented_units(motion_video):
    # Units: pixels per sampled step at a 256-px short side. Sampling every 2nd frame of a 120-px video
    # turns a pan of v px/frame into 2 * v * 256 / 120 px per step (shapes move too, so allow 25 %).
    scorers = build_scorers(("motion",), opencv_flow="dis")
    for s in motion_video.scenes:
        if s.camera_speed == 0:
            continue
        got = score_clip(motion_video.path, s.start_time, s.end_time, scorers, sample_fps=5.0)["motion_score"]
        assert got == pytest.approx(2 * s.camera_speed * 256 / 120, rel=0.25)


def test_grid_sampling_same_in_clip_and_whole_video_pass(motion_video):
    sampler = GridSampler(2.0, max_side=None)
    for t, f in iter_frames(motion_video.path):
        sampler.offer(t, f)
    for start, end in ((0.0, 4.0), (3.05, 7.3), (4.0, 10.0), (9.95, 24.0)):
        clip = sample_clip_frames(motion_video.path, start, end, 2.0, max_side=None)
        whole = sampler.between(start, end)
        assert clip.times == pytest.approx(whole.times)
        np.testing.assert_array_equal(clip.frames, whole.frames)
        # Grid frames: the first frame at or after each multiple of 0.5 s inside the clip.
        ticks = np.arange(np.ceil(start * 2 - 1e-9) / 2, end - 1e-9, 0.5)
        assert clip.times == pytest.approx([np.ceil(t * FPS - 1e-9) / FPS for t in ticks])


def test_frames_shrunk_to_max_side(motion_video):
    s = sample_clip_frames(motion_video.path, 0.0, 2.0, 2.0, max_side=80)
    assert s.frames.shape == (4, 60, 80, 3) and s.frames.dtype == np.uint8


def test_split_and_score_reuses_one_decode(motion_video):
    scorers = build_scorers(("motion",))
    scan = split_and_score(motion_video.path, scorers, sample_fps=2.0, min_seconds=3.0, max_seconds=10.0)
    assert [c.clip.start_frame for c in scan.clips] == [s.start_frame for s in motion_video.scenes]
    assert scan.dropped == [] and scan.skipped == {}
    for c in scan.clips:
        ref = score_clip(motion_video.path, c.clip.start_time, c.clip.end_time, scorers, sample_fps=2.0)
        assert c.scores == ref  # identical frames -> identical scores
        assert c.scores["num_sampled_frames"] == 8


def test_score_clip_errors(tmp_path, motion_video):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoReadError, match="bad.mp4"):
        score_clip(bad, 0.0, 1.0, build_scorers(("motion",)))
    with pytest.raises(ValueError, match="unknown scorer"):
        build_scorers(("motion", "beauty"))
    with pytest.raises(ValueError, match="after start_time"):
        score_clip(motion_video.path, 2.0, 1.0, build_scorers(("motion",)))


def test_unconfigured_scorers_skipped_once_with_reason(caplog):
    with caplog.at_level(logging.WARNING, logger="ea_data.scoring"):
        built = build_scorers(("motion", "aesthetic"), motion_backend="raft")
    assert built.fns == {}
    assert "raft_weights" in built.skipped["motion"]
    assert "clip_weights" in built.skipped["aesthetic"] and "aesthetic_head" in built.skipped["aesthetic"]
    assert sum("left out" in r.message for r in caplog.records) == 2


@pytest.fixture(scope="module", params=[4, 5, 6])
def text_video(request, tmp_path_factory):
    """Five 2 s scenes at 320x240: text areas of 3 %, 4 % and 0.4 % on plates, 2 % drawn directly on a
    dark textured background (no plate), and no text.

    The text area is the text line's tight glyph box grown by LINE_MARGIN glyph heights (the definition
    shared by ea_data.scoring.text and the generator's truth). Over 14 seeded plates of 0.4-6.3 % the
    scorer read +0.02 percentage points off on average, worst 0.23 pp.
    """
    rng = np.random.default_rng(request.param)
    specs = [SceneSpec.random(rng, 20, motion="slow", text_area=a, num_shapes=1)
             for a in (0.03, 0.04, 0.004, 0.02, 0.0)]
    for spec, bg in zip(specs, ("blobs", "noise", "stripes", "blobs", "checker")):
        spec.background = bg
    specs[3].text_plate, specs[3].palette = False, ("blue", "purple")  # natural subtitle: no plate
    return make_video(tmp_path_factory.mktemp("text") / "t.mp4", specs, width=320, height=240, fps=FPS)


def test_text_area_matches_drawn_text_and_filter(text_video):
    scorers = build_scorers(("motion", "text", "aesthetic"), text_frames=2)
    assert set(scorers.fns) == {"motion", "text"} and "aesthetic" in scorers.skipped
    for s in text_video.scenes:
        scores = score_clip(text_video.path, s.start_time, s.end_time, scorers, sample_fps=2.0)
        assert scores["aesthetic_score"] is None and scores["num_sampled_frames"] == 4
        assert 0.0 <= scores["text_area"] <= 1.0
        if s.text_area == 0:
            assert scores["text_area"] == 0.0  # no false text on the textured background
        else:
            assert scores["text_area"] == pytest.approx(s.text_area, abs=0.003)
        assert (scores["text_area"] > 0.01) == (s.text_area > 0.01)  # the 1 % filter decides as on the truth
