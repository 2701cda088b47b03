"""Frame sampling (closed-form indices) and clip loading (against a full decode with ea_vae.video_io)."""

import numpy as np
import pytest

from ea_captions.sampling import FrameSampling, load_clip, sample_frame_indices


@pytest.mark.parametrize("total, n, expected", [
    (16, 4, [2, 6, 10, 14]),   # middles of 4 segments of 4 frames
    (10, 1, [5]),
    (5, 5, [0, 1, 2, 3, 4]),
    (3, 8, [0, 1, 2]),         # fewer frames than asked: each frame once
    (9, 2, [2, 6]),
])
def test_uniform_indices(total, n, expected):
    assert sample_frame_indices(total, 8.0, FrameSampling(num_frames=n)).tolist() == expected


def test_fixed_rate_indices():
    # 40 frames at 8 fps = 5 s; 1 frame per second -> the middle of each second
    assert sample_frame_indices(40, 8.0, FrameSampling(fps=1.0)).tolist() == [4, 12, 20, 28, 36]
    # 2 fps over 5 s -> 10 frames, every 4th frame
    assert sample_frame_indices(40, 8.0, FrameSampling(fps=2.0)).tolist() == list(range(2, 40, 4))
    # bounds: at least min_frames, at most max_frames
    assert len(sample_frame_indices(8, 8.0, FrameSampling(fps=0.5, min_frames=2))) == 2
    assert len(sample_frame_indices(400, 8.0, FrameSampling(fps=4.0, max_frames=16))) == 16


def test_bad_sampling_arguments():
    with pytest.raises(ValueError, match="num_frames"):
        FrameSampling(num_frames=0)
    with pytest.raises(ValueError, match="fps"):
        FrameSampling(fps=-1.0)
    with pytest.raises(ValueError, match="source frame rate"):
        sample_frame_indices(10, 0.0, FrameSampling(fps=1.0))


def test_load_clip_matches_full_decode(synthetic_data):
    from ea_vae.video_io import read_video

    root, records = synthetic_data
    video = next(r for r in records if r["type"] == "video")
    scene = video["scenes"][1]
    path = root / video["file"]
    clip = load_clip("c", path, scene["start_time"], scene["end_time"], FrameSampling(num_frames=4))
    full, fps = read_video(path, scene["start_time"], scene["end_time"])
    assert len(full) == scene["end_frame"] - scene["start_frame"]
    idx = sample_frame_indices(len(full), fps, FrameSampling(num_frames=4))
    np.testing.assert_array_equal(clip.frames, full[idx])
    assert clip.fps == pytest.approx(4 / (len(full) / fps))
    assert (clip.start_time, clip.end_time) == (scene["start_time"], scene["end_time"])

    fixed = load_clip("c", path, scene["start_time"], scene["end_time"], FrameSampling(fps=2.0))
    idx = sample_frame_indices(len(full), fps, FrameSampling(fps=2.0))
    np.testing.assert_array_equal(fixed.frames, full[idx])


def test_load_image_and_bad_files(synthetic_data, tmp_path):
    from PIL import Image

    from ea_vae.video_io import VideoReadError

    root, records = synthetic_data
    image = next(r for r in records if r["type"] == "image")
    clip = load_clip("i", root / image["file"])
    assert clip.is_image and clip.frames.shape == (1, image["height"], image["width"], 3)
    np.testing.assert_array_equal(clip.frames[0], np.asarray(Image.open(root / image["file"]).convert("RGB")))

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoReadError, match="broken.mp4"):
        load_clip("b", bad, 0.0, 1.0)
    with pytest.raises(OSError, match="missing.png"):
        load_clip("m", tmp_path / "missing.png")
