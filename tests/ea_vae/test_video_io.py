"""Video file I/O: round trips, time ranges, fps subsampling, GIFs and clear errors on bad files."""

import numpy as np
import pytest
import torch

from ea_vae.video_io import (
    VideoReadError,
    frames_to_tensor,
    iter_frames,
    read_video,
    tensor_to_frames,
    video_info,
    write_video,
)


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
    # Frame i is a flat grey of value 8 * i: decoded values identify the frame index.
    frames = np.broadcast_to((np.arange(30) * 8).astype(np.uint8)[:, None, None, None], (30, 32, 48, 3)).copy()
    path = tmp_path_factory.mktemp("io") / "ramp.mp4"
    write_video(path, frames, fps=15)
    return path, frames


def test_round_trip_and_info(ramp):
    path, frames = ramp
    info = video_info(path)
    assert (info.fps, info.num_frames, info.width, info.height) == (15, 30, 48, 32)
    assert info.duration == pytest.approx(2.0)
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and fps == 15
    assert np.abs(decoded.astype(int) - frames).max() <= 3


def test_time_range_and_fps(ramp):
    path, _ = ramp
    clip, _ = read_video(path, start_time=1.0, end_time=1.5)
    np.testing.assert_allclose(clip[:, 0, 0, 0], np.arange(15, 23) * 8, atol=3)
    sub, fps = read_video(path, fps=5)
    assert fps == 5
    np.testing.assert_allclose(sub[:, 0, 0, 0], np.arange(0, 30, 3) * 8, atol=3)


def test_scaled_and_selected_decoding(ramp):
    path, frames = ramp
    small, _ = read_video(path, size=(24, 16))
    assert small.shape == (30, 16, 24, 3)
    np.testing.assert_allclose(small[:, 5, 5, 0], frames[:, 0, 0, 0], atol=3)
    kept = [t for t, _ in iter_frames(path, keep=lambda i, t: i % 10 == 0)]
    assert kept == pytest.approx([0.0, 10 / 15, 20 / 15])


def test_gif(tmp_path, ramp):
    _, frames = ramp
    write_video(tmp_path / "a.gif", frames[:6, :31, :47], fps=8)  # odd sizes are fine for GIFs
    assert read_video(tmp_path / "a.gif")[0].shape == (6, 31, 47, 3)


def test_bad_files(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 50)
    for name, message in [("missing.mp4", "does not exist"), ("empty.mp4", "empty"), ("junk.mp4", "not a readable")]:
        with pytest.raises(VideoReadError, match=message) as e:
            read_video(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(ValueError, match="even width"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8), fps=8)


def test_tensor_conversion():
    frames = np.random.default_rng(0).integers(0, 256, (3, 4, 6, 3), dtype=np.uint8)
    t = frames_to_tensor(frames)
    assert t.shape == (3, 3, 4, 6) and t.min() >= -1 and t.max() <= 1
    assert torch.allclose(t[:, 1, 2, 3], torch.tensor(frames[1, 2, 3], dtype=torch.float32) / 127.5 - 1)
    np.testing.assert_array_equal(tensor_to_frames(t), frames)
