"""Scene detection finds the generator's cuts; clip splitting obeys its bounds and accounts for every frame."""

import numpy as np
import pytest

from ea_data import detect_scenes, split_scene_clips
from ea_data.scenes import TOO_LONG, TOO_SHORT, Scene
from ea_data.synthetic import SceneSpec, make_dataset, make_video
from ea_vae.video_io import VideoReadError, read_video

FPS = 10.0


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    rng = np.random.default_rng(5)
    plan = [(30, "static"), (41, "fast"), (25, "slow"), (33, "fast"), (20, "static")]
    specs = [SceneSpec.random(rng, n, motion=m) for n, m in plan]
    return make_video(tmp_path_factory.mktemp("scenes") / "v.mp4", specs, width=160, height=120, fps=FPS)


@pytest.mark.parametrize("detector", ["adaptive+histogram", "adaptive", "content", "histogram"])
def test_cuts_match_truth(video, detector):
    scenes = detect_scenes(video.path, detector=detector)
    found = [s.start_frame for s in scenes[1:]]
    assert len(found) == len(video.cuts)
    assert np.abs(np.array(found) - np.array(video.cuts)).max() <= 1
    # Scenes tile the whole video, end included; times are frame / fps.
    assert scenes[0].start_frame == 0 and scenes[-1].end_frame == video.num_frames
    assert all(a.end_frame == b.start_frame for a, b in zip(scenes[:-1], scenes[1:]))
    for k, s in enumerate(scenes):
        assert s.scene_index == k and s.fps == FPS
        assert s.start_time == pytest.approx(s.start_frame / FPS) and s.end_time == pytest.approx(s.end_frame / FPS)


def test_frame_skip_and_downscale_still_find_cuts(video):
    scenes = detect_scenes(video.path, frame_skip=1, downscale=2)
    found = [s.start_frame for s in scenes[1:]]
    assert len(found) == len(video.cuts)
    assert np.abs(np.array(found) - np.array(video.cuts)).max() <= 1  # skipping 1 frame: at most 1 late


def test_on_frame_sees_every_decoded_frame(video):
    seen, cuts = [], []
    detect_scenes(video.path, on_frame=lambda i, t, f: seen.append((i, t, f.shape)), on_cut=cuts.append)
    frames, _ = read_video(video.path)
    assert [i for i, _, _ in seen] == list(range(len(frames)))
    assert all(shape == frames.shape[1:] for _, _, shape in seen)
    assert [t for _, t, _ in seen] == pytest.approx([i / FPS for i in range(len(frames))])
    assert cuts == sorted(cuts) and len(cuts) == len(video.cuts)


@pytest.mark.parametrize("content", [b"", b"this is not a video at all" * 20, None])
def test_unreadable_input_raises_with_file_name(tmp_path, content):
    path = tmp_path / "broken.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        detect_scenes(path)


def test_bad_arguments(video):
    with pytest.raises(ValueError, match="detector"):
        detect_scenes(video.path, detector="hash")
    with pytest.raises(ValueError, match="min_seconds"):
        split_scene_clips([], min_seconds=5, max_seconds=3)


@pytest.mark.parametrize("seed", [0, 1, 4, 5, 7])
def test_adaptive_histogram_finds_every_synthetic_cut_over_seeds(tmp_path, seed):
    """make_dataset videos (static / slow / fast pans, random textures and palettes): every cut within one
    frame and no false cut for "adaptive+histogram". On each of these seeds AdaptiveDetector with
    PySceneDetect's defaults misses a cut into or out of a fast textured scene, or between two
    similar-coloured scenes."""
    records = make_dataset(tmp_path, num_videos=4, num_images=0, seed=seed)
    for r in records:
        scenes = detect_scenes(tmp_path / r["file"], detector="adaptive+histogram")
        found = [s.start_frame for s in scenes[1:]]
        assert len(found) == len(r["cuts"]), (r["file"], found, r["cuts"])
        assert np.abs(np.array(found) - np.array(r["cuts"])).max() <= 1, (r["file"], found, r["cuts"])


def test_default_detector_on_synthetic_seeds(tmp_path):
    """The default ("blockmatch") on the same synthetic videos: measured no missed and no false boundary in
    64 cuts over seeds 0-7 (benchmarks/scene_detection.py), one cut 2 frames early (a fast pan over a
    checkerboard whose colours have the same grey: seed 0). Seeds 1 and 3 hold the cases that the weak-cut
    rule must get right: a cut between like stripes, and objects that wrap around over a plain background
    (not cuts). Here, over their 16 videos: every boundary found, none false, each within 2 frames."""
    for seed in (0, 1, 3, 7):
        for r in make_dataset(tmp_path / str(seed), num_videos=4, num_images=0, seed=seed):
            scenes = detect_scenes(tmp_path / str(seed) / r["file"])
            starts = [s.start_frame for s in scenes[1:] if not (s.kind == "shot" and scenes[s.scene_index - 1].is_transition)]
            assert len(starts) == len(r["cuts"]), (seed, r["file"], starts, r["cuts"])
            assert all(abs(c - f) <= 2 for c, f in zip(r["cuts"], starts)), (seed, r["file"], starts, r["cuts"])


def test_default_detector_finds_a_cut_between_like_textures(tmp_path):
    """Seed 1's video_002 cuts from a panning green-yellow stripe texture to a static one of the same colours
    at frame 29: stripes match themselves at many shifts, so the step mismatch there (0.38) stays under
    blockmatch's 0.4, but it is 14x the shot's own steps (0.026 before, 0 after). Missed before the
    contrast rule (BlockMatchConfig.cut_low / cut_contrast)."""
    r = make_dataset(tmp_path, num_videos=4, num_images=0, seed=1)[2]
    assert r["file"].endswith("video_002.mp4") and r["cuts"] == [29, 65], r
    scenes = detect_scenes(tmp_path / r["file"])
    assert [s.start_frame for s in scenes[1:]] == [29, 65]


def _scene(start, n, fps=FPS, index=0):
    return Scene.from_frames(start, start + n, fps, index)


def test_split_bounds_and_reasons():
    scenes = [_scene(0, 25, index=0), _scene(25, 50, index=1), _scene(75, 230, index=2), _scene(305, 100, index=3)]
    clips, dropped = split_scene_clips(scenes, 3.0, 10.0, return_dropped=True)
    # 2.5 s dropped; 5 s kept; 23 s -> ceil(23/10) = 3 equal pieces (76/77/77 frames); 10 s kept whole.
    assert [(c.start_frame, c.end_frame, c.scene_index) for c in clips] == [
        (25, 75, 1), (75, 151, 2), (151, 228, 2), (228, 305, 2), (305, 405, 3)]
    assert [(d.scene.scene_index, d.reason) for d in dropped] == [(0, TOO_SHORT)]
    assert all(3.0 <= c.duration <= 10.0 for c in clips)
    assert clips[1].start_time == pytest.approx(7.5) and clips[1].end_time == pytest.approx(15.1)
    # Without split_long the 23 s scene is dropped as too long; the plain call returns only clips.
    plain = split_scene_clips(scenes, 3.0, 10.0, split_long=False)
    assert [c.scene_index for c in plain] == [1, 3]
    _, dropped = split_scene_clips(scenes, 3.0, 10.0, split_long=False, return_dropped=True)
    assert [(d.scene.scene_index, d.reason) for d in dropped] == [(0, TOO_SHORT), (2, TOO_LONG)]


def test_split_leftover_when_equal_pieces_too_short():
    # 4.5 s with bounds [3, 4]: two equal pieces would be 2.25 s, so one 4 s piece + a dropped 0.5 s leftover.
    clips, dropped = split_scene_clips([_scene(10, 45)], 3.0, 4.0, return_dropped=True)
    assert [(c.start_frame, c.end_frame) for c in clips] == [(10, 50)]
    assert [(d.scene.start_frame, d.scene.end_frame, d.reason) for d in dropped] == [(50, 55, TOO_SHORT)]
    # 7.5 s with bounds [3, 4]: equal halves of 3.7/3.8 s fit.
    clips = split_scene_clips([_scene(0, 75)], 3.0, 4.0)
    assert [(c.start_frame, c.end_frame) for c in clips] == [(0, 37), (37, 75)]


def test_split_accounts_for_every_frame():
    rng = np.random.default_rng(0)
    for fps in (10.0, 24.0, 29.97):
        lengths = rng.integers(1, int(30 * fps), size=40)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        scenes = [_scene(int(s), int(n), fps, k) for k, (s, n) in enumerate(zip(starts, lengths))]
        for lo, hi in ((3.0, 10.0), (3.0, 4.0), (0.5, 1.0)):
            clips, dropped = split_scene_clips(scenes, lo, hi, return_dropped=True)
            spans = sorted([(c.start_frame, c.end_frame) for c in clips] +
                           [(d.scene.start_frame, d.scene.end_frame) for d in dropped])
            assert spans[0][0] == 0 and spans[-1][1] == int(lengths.sum())
            assert all(a[1] == b[0] for a, b in zip(spans[:-1], spans[1:]))
            assert all(lo - 1e-6 <= c.duration <= hi + 1e-6 for c in clips)
            assert all(d.scene.duration < lo for d in dropped if d.reason == TOO_SHORT)
