"""Scene detection on realistic videos (real photographs, camera motion, lighting, low-bitrate H.264).

The videos come from ea_data.realistic with their ground truth. Each case below is one the previous
default ("adaptive+histogram") got wrong on real footage: keyframe quality jumps in a static shot, a
fast pan past light and shade, and (for PySceneDetect's defaults) a hard cut inside fast motion.
"""

import json

import numpy as np
import pytest

pytest.importorskip("skimage")

from ea_data import detect_scenes, split_scene_clips  # noqa: E402
from ea_data.realistic import (  # noqa: E402
    ShotSpec,
    SubjectSpec,
    TransitionSpec,
    fit_camera,
    load_photo,
    make_realistic_video,
)
from ea_data.scenes import TRANSITION  # noqa: E402
from ea_vae.video_io import read_video  # noqa: E402

W, H, FPS = 192, 108, 24.0
S, T = ShotSpec, TransitionSpec


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """Four short clips, made once per test session."""
    out = tmp_path_factory.mktemp("realistic")
    rider = SubjectSpec("astronaut", (0.45, 0.3), velocity=(0.3, 0), position=(0.4, 0.5))
    plans = {
        # A static shot at a low bitrate: a keyframe every 12 frames re-codes the whole picture.
        "static_keyframes": ([S("coffee", 72, noise=3.0, seed=1)], [], 12, 40_000),
        # Following a rider past tree shadows: fast pan with motion blur, exposure chasing the light.
        "pan_light_shade": ([S("motorcycle", 72, view=0.35, pan=(7, 0), shade=0.55, blur=True, subject=rider,
                               seed=4)], [], 48, 120_000),
        # A hard cut between two fast, blurred pans over similar grey textures.
        "fast_cut": ([S("gravel", 36, view=0.4, pan=(10, 2), blur=True, seed=13),
                      S("grass", 36, view=0.4, pan=(-10, 3), blur=True, seed=14)], [T("cut")], 24, 150_000),
        # Gradual transitions between moving shots.
        "gradual": ([S("astronaut", 40, pan=(2, 0), seed=17), S("coffee", 40, zoom=1.006, seed=18),
                     S("rocket", 40, pan=(0, 1.5), seed=21)], [T("dissolve", 12), T("fade", 12)], 48, 100_000),
    }
    return {name: make_realistic_video(out / f"{name}.mp4", shots, trans, W, H, FPS, gop=gop, bitrate=rate)
            for name, (shots, trans, gop, rate) in plans.items()}


def test_truth_written_with_video_and_keyframe_jump_measured(videos):
    v = videos["static_keyframes"]
    saved = json.loads(open(v.path + ".json").read())
    assert saved["num_frames"] == v.num_frames == 72 and saved["transitions"] == []
    assert v.keyframes == list(range(0, 72, 12))  # fixed keyframe grid (x264 scene cut off)
    # Independent measurement on the decoded file: the frame difference into a keyframe against the
    # median elsewhere (the scene itself does not change).
    frames, _ = read_video(v.path)
    g = frames.astype(np.float32).mean(-1)
    d = np.abs(np.diff(g, axis=0)).mean(axis=(1, 2))  # d[k]: into frame k + 1
    at_keys = d[[k - 1 for k in v.keyframes[1:]]]
    assert at_keys.mean() > 2 * np.median(np.delete(d, [k - 1 for k in v.keyframes[1:]]))
    assert v.keyframe_jump > 2


def test_transition_truth_spans(videos):
    v = videos["gradual"]
    assert [(t.kind, t.start, t.end) for t in v.transitions] == [("dissolve", 28, 40), ("fade", 62, 74)]
    frames, _ = read_video(v.path)
    luma = frames.astype(np.float32).mean(axis=(1, 2, 3))
    # A fade through black: its darkest frames are in its middle, far darker than the shots around it.
    assert luma[66:70].min() < 0.25 * min(luma[58], luma[78])


def test_camera_path_stays_inside_the_photo():
    for spec in (S("rocket", 96, view=0.6, center=(0.9, 0.5), pan=(9, 1)), S("coins", 60, zoom=0.98, view=0.7)):
        ph, pw = load_photo(spec.photo).shape[:2]
        view, cx, cy = fit_camera(spec, (ph, pw), W, H)
        z = W / (view * pw)
        for t in (0, spec.num_frames):
            zt = z * spec.zoom ** t
            x, y = cx + spec.pan[0] * t / z, cy + spec.pan[1] * t / z
            assert 0 <= x - W / (2 * zt) and x + W / (2 * zt) <= pw
            assert 0 <= y - H / (2 * zt) and y + H / (2 * zt) <= ph


def test_static_shot_with_keyframe_jumps_has_no_cut(videos):
    scenes = detect_scenes(videos["static_keyframes"].path)
    assert [(s.start_frame, s.end_frame, s.kind) for s in scenes] == [(0, 72, "shot")]


def test_fast_pan_past_light_and_shade_has_no_cut(videos):
    scenes = detect_scenes(videos["pan_light_shade"].path)
    assert [(s.start_frame, s.end_frame) for s in scenes] == [(0, 72)]


def test_hard_cut_inside_fast_motion_found(videos):
    v = videos["fast_cut"]
    scenes = detect_scenes(v.path)
    assert len(scenes) == 2 and all(s.kind == "shot" for s in scenes)
    assert abs(scenes[1].start_frame - v.cuts[0]) <= 1


def test_previous_default_fails_these_clips(videos):
    """The clips above exercise the failure modes: the previous default cuts mid-shot on at least one."""
    false = 0
    for name in ("static_keyframes", "pan_light_shade"):
        false += len(detect_scenes(videos[name].path, detector="adaptive+histogram")) - 1
    assert false >= 1


def test_gradual_transitions_reported_and_never_split_in_the_middle(videos):
    v = videos["gradual"]
    scenes = detect_scenes(v.path)
    trans = [s for s in scenes if s.is_transition]
    assert [s.kind for s in trans] == ["dissolve", "fade"]
    for s, t in zip(trans, v.transitions):
        assert s.start_frame <= t.end + 2 and t.start <= s.end_frame - 1 + 2  # spans within 2 frames
    # Records tile the video; transitions are never clips.
    assert scenes[0].start_frame == 0 and scenes[-1].end_frame == v.num_frames
    assert all(a.end_frame == b.start_frame for a, b in zip(scenes[:-1], scenes[1:]))
    clips, dropped = split_scene_clips(scenes, min_seconds=0.5, max_seconds=10.0, return_dropped=True)
    assert [d.scene.kind for d in dropped if d.reason == TRANSITION] == ["dissolve", "fade"]
    assert len(clips) == 3
    for t in v.transitions:
        middle = (t.start + t.end) // 2
        for c in clips:
            # No clip holds a transition's middle, nor more than 2 of its mixed frames.
            assert not c.start_frame <= middle < c.end_frame
            assert min(c.end_frame, t.end) - max(c.start_frame, t.start) <= 2
