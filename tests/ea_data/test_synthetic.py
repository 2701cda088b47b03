"""The synthetic generator's reported truth matches what is measured back from the written mp4."""

import json

import numpy as np
import pytest

from ea_data.scoring.text import LINE_MARGIN
from ea_data.synthetic import SceneSpec, ShapeSpec, VideoTruth, make_dataset, make_video
from ea_vae.video_io import read_video, video_info


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    rng = np.random.default_rng(3)
    specs = [
        SceneSpec.random(rng, 30, motion="static"),
        SceneSpec.random(rng, 34, motion="fast", text_area=0.04),
        SceneSpec.random(rng, 27, motion="slow"),
    ]
    # A fixed direction for one scene, so direction is checked against a known value too.
    specs[1].camera_velocity = (3.0, -2.0)
    path = tmp_path_factory.mktemp("syn") / "v.mp4"
    truth = make_video(path, specs, width=160, height=128, fps=10)
    frames, fps = read_video(path)
    return truth, frames, fps


def test_file_properties(video):
    truth, frames, fps = video
    info = video_info(truth.path)
    assert frames.shape == (truth.num_frames, 128, 160, 3) == (91, 128, 160, 3)
    assert fps == info.fps == 10
    assert truth.cuts == [30, 64]
    saved = VideoTruth.from_json(json.loads(open(truth.path + ".json").read()))
    assert saved.cuts == truth.cuts and saved.scenes[1].text_area == truth.scenes[1].text_area


def test_cuts_measured_from_frame_differences(video):
    truth, frames, _ = video
    diff = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # diff[i]: i -> i+1
    # The two largest jumps are exactly the cuts, far above any within-scene change.
    top = sorted(np.argsort(diff)[-2:] + 1)
    assert top == truth.cuts
    within = np.delete(diff, [c - 1 for c in truth.cuts])
    assert diff[[c - 1 for c in truth.cuts]].min() > 3 * within.max()


def _measured_velocity(frames, search=6):
    """Median integer shift between consecutive frames (exhaustive block matching), pixels per frame."""
    shifts = []
    m = search
    for a, b in zip(frames[:-1].astype(np.float32), frames[1:].astype(np.float32)):
        errors = {}
        for dy in range(-m, m + 1):
            for dx in range(-m, m + 1):
                # b[y, x] == a[y - dy, x - dx] when the content moved by (dx, dy).
                shifted = a[m - dy:a.shape[0] - m - dy, m - dx:a.shape[1] - m - dx]
                errors[(dx, dy)] = np.abs(b[m:-m, m:-m] - shifted).mean()
        shifts.append(min(errors, key=errors.get))
    return np.median(np.array(shifts, np.float32), axis=0)


def test_motion_direction_and_speed(video):
    truth, frames, _ = video
    for scene in truth.scenes:
        clip = frames[scene.start_frame:scene.end_frame]
        measured = _measured_velocity(clip[:, :64])  # above the (static) text plate
        # Integer-pixel rolls: each step moves by round(v*i) - round(v*(i-1)), median within 1 px of v.
        np.testing.assert_allclose(measured, scene.camera_velocity, atol=1.0)
        mean_shift = np.abs(np.diff(clip.astype(np.float32), axis=0)).mean()
        if scene.static:
            assert mean_shift < 1.0, "a static scene should not change between frames"
        else:
            assert mean_shift > 2.0
    np.testing.assert_allclose(_measured_velocity(frames[30:64, :64]), (3.0, -2.0), atol=0.5)


def _measured_text_area(clip, threshold=225.0):
    """Text area measured from decoded frames: the box of the white text pixels (luma above `threshold`;
    textures and shapes stay inside [40, 215]) grown by LINE_MARGIN of its height per side, over the
    frame area."""
    luma = clip @ np.array([0.299, 0.587, 0.114], np.float32)  # chroma is subsampled in the file; luma is not
    white = luma.mean(0) > threshold  # mean over frames: the text is static
    if not white.any():
        return 0.0
    ys, xs = np.nonzero(white)
    w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    return (w + 2 * LINE_MARGIN * h) * (h + 2 * LINE_MARGIN * h) / white.size


def test_text_area_measured_from_text(video):
    truth, frames, _ = video
    for scene in truth.scenes:
        clip = frames[scene.start_frame:scene.end_frame].astype(np.float32)
        # Glyph strokes are 2+ px wide here; a 1 px error on one side of a ~14 px line is ~0.1 pp.
        assert abs(_measured_text_area(clip) - scene.text_area) < 0.002, (scene.text_area,)
    assert abs(truth.scenes[1].text_area - 0.04) < 0.004
    assert truth.scenes[0].text_area == 0 and truth.scenes[1].text


def test_text_without_plate_measured(tmp_path):
    rng = np.random.default_rng(8)
    spec = SceneSpec.random(rng, 6, motion="static", text_area=0.03)
    spec.text_plate, spec.palette = False, ("blue", "red")
    truth = make_video(tmp_path / "n.mp4", [spec], width=160, height=128)
    frames, _ = read_video(truth.path)
    assert (frames.max(-1) < 20).sum() == 0  # no plate drawn
    # Dark palette (luma < 110): thin strokes blurred by the codec are found at half contrast.
    assert abs(_measured_text_area(frames.astype(np.float32), 180.0) - truth.scenes[0].text_area) < 0.002


def test_rotation_changes_shape_orientation(tmp_path):
    spec = SceneSpec(num_frames=5, background="checker", palette=("blue", "white"),
                     shapes=[ShapeSpec("square", "red", 0.3, (0.5, 0.5), (0.0, 0.0), 22.5)])
    truth = make_video(tmp_path / "r.mp4", [spec], width=96, height=96)
    frames, _ = read_video(truth.path)
    red = (frames[..., 0] > 150) & (frames[..., 1] < 100) & (frames[..., 2] < 100)
    # Vertices start on the axes (a diamond); after 45 degrees the square is axis-aligned: x extent / sqrt(2).
    def extent(m):
        ys, xs = np.nonzero(m)
        return xs.max() - xs.min()
    assert extent(red[2]) / extent(red[0]) == pytest.approx(1 / np.sqrt(2), rel=0.1)
    assert extent(red[4]) == pytest.approx(extent(red[0]), abs=2)


def test_dataset_metadata(tmp_path):
    records = make_dataset(tmp_path, num_videos=2, num_images=2, seed=1)
    lines = [json.loads(x) for x in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(records))
    assert [r["type"] for r in lines] == ["video", "video", "image", "image"]
    for r in lines:
        assert (tmp_path / r["file"]).stat().st_size > 0 and r["caption"]
    for r in lines[:2]:
        assert len(r["scenes"]) == 3 and r["cuts"] == [s["start_frame"] for s in r["scenes"][1:]]
        durations = [s["end_time"] - s["start_time"] for s in r["scenes"]]
        assert all(3.4 <= d <= 6.1 for d in durations)
    again = make_dataset(tmp_path / "again", num_videos=2, num_images=2, seed=1)
    assert [r["caption"] for r in again] == [r["caption"] for r in records]


# ------------------------------------------------------------------------------------------ demo world


def test_demo_caption_and_vocabulary():
    from ea_data.synthetic import COLOR_NAMES, DIRECTIONS, SHAPES, demo_caption

    assert DIRECTIONS == ("left", "right", "up", "down")
    assert demo_caption("red", "circle", "left") == "a red circle moves left"
    captions = {demo_caption(c, s, d) for c in COLOR_NAMES for s in SHAPES for d in DIRECTIONS}
    assert len(captions) == len(COLOR_NAMES) * len(SHAPES) * len(DIRECTIONS)  # one word apart, all distinct
    for bad in [("magenta", "circle", "left"), ("red", "blob", "left"), ("red", "circle", "north")]:
        with pytest.raises(ValueError, match="unknown"):
            demo_caption(*bad)


def test_held_out_covers_every_colour_and_direction():
    from ea_data.synthetic import COLOR_NAMES, DIRECTIONS, HELD_OUT, SHAPES, demo_triples

    assert len(HELD_OUT) >= 16 and len(set(HELD_OUT)) == len(HELD_OUT)
    assert {c for c, _, _ in HELD_OUT} == set(COLOR_NAMES)
    assert {d for _, _, d in HELD_OUT} == set(DIRECTIONS)
    assert all(s in SHAPES for _, s, _ in HELD_OUT)
    train = demo_triples()
    assert not set(train) & set(HELD_OUT)
    assert len(train) + len(HELD_OUT) == len(COLOR_NAMES) * len(SHAPES) * len(DIRECTIONS)
    # Every pair of a held-out triple is seen in training with another third word (composition is possible).
    for c, s, d in HELD_OUT:
        assert any(t[0] == c and t[2] == d for t in train)
        assert any(t[1] == s and t[2] == d for t in train)
        assert any(t[0] == c and t[1] == s for t in train)


def test_demo_background_never_contains_an_object_colour():
    from ea_data.synthetic import COLOR_NAMES, demo_scene, render_scene

    palette = np.array(list(COLOR_NAMES.values()), np.float32)
    rng = np.random.default_rng(0)
    for kind in ("moving", "fast"):
        spec = demo_scene("red", "circle", "up", 6, rng, 64, kind=kind)
        spec.shapes = []
        frames, _ = render_scene(spec, 64, 64)
        d = np.linalg.norm(frames.reshape(-1, 1, 3).astype(np.float32) - palette, axis=-1)
        assert d.min() > 90  # the evaluator's colour tolerance is 60


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from ea_data.synthetic import make_demo_dataset

    out = tmp_path_factory.mktemp("demo")
    return out, make_demo_dataset(out, num_videos=6, num_images=3, size=64)


def test_demo_dataset_truth_and_held_out(demo_data):
    from ea_data.clip_eval import evaluate_clip
    from ea_data.synthetic import HELD_OUT, demo_caption

    out, records = demo_data
    held = {demo_caption(*t) for t in HELD_OUT}
    videos = [r for r in records if r["type"] == "video"]
    assert len(videos) == 6 and sum(r["type"] == "image" for r in records) == 3
    kinds = set()
    for rec in videos:
        frames, fps = read_video(out / rec["file"])
        assert frames.shape[0] == rec["num_frames"] and fps == 8
        for scene in rec["scenes"]:
            (shape,) = scene["shapes"]
            assert not any(h in scene["caption"] for h in held)
            clip = frames[scene["start_frame"]:scene["end_frame"]].transpose(3, 0, 1, 2) / 127.5 - 1
            m = evaluate_clip(clip, shape["color"])
            assert m["frames_with_color"] == clip.shape[1]  # the object stays inside the frame
            if scene["static"]:
                kinds.add("static")
                assert m["direction"] is None and scene["caption"].endswith("rests")
                continue
            # The caption's direction is the measured one, and the object crosses >= 1/10 of the frame.
            assert scene["caption"].split(" moves ")[1].split()[0] == m["direction"]
            assert m["travel"] >= 0.1
            kinds.add("fast" if scene["camera_speed"] > 0 else "text" if scene["text_area"] > 0 else "moving")
    assert {"static", "moving"} <= kinds
