"""WebDataset shards: read back with webdataset, check json fields, decoded frames, sizes, resume."""

import json
import tarfile

import cv2
import numpy as np
import pytest

from ea_data.manifest import new_record
from ea_data.shards import ShardConfig, ShardWriter, output_size, resize_frame, write_shards
from ea_data.synthetic import SceneSpec, make_image, make_video
from ea_vae.video_io import read_video


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(0)
    specs = [SceneSpec.random(rng, 24, "slow"), SceneSpec.random(rng, 20, "fast"), SceneSpec.random(rng, 16, "static")]
    truth = make_video(root / "vids" / "a.mp4", specs, width=128, height=96, fps=8)
    make_image(root / "img" / "p.png", SceneSpec.random(rng, 1, "static"), width=80, height=60)
    recs = []
    for s in truth.scenes:
        recs.append(new_record("vids/a.mp4", start_frame=s.start_frame, end_frame=s.end_frame,
                               start_time=s.start_time, end_time=s.end_time, fps=8.0, width=128, height=96,
                               motion_score=1.5, text_area=0.0, status="kept", caption=s.caption))
    recs[2].update(status="rejected", reject_reason="motion_low")
    recs.append(new_record("img/p.png", type="image", width=80, height=60, status="kept", caption="an image"))
    return root, truth, recs


def _read_back(out):
    import webdataset as wds

    urls = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}


def assert_same_shards(a, b, tmp_path):
    """Same shard files with the same members in the same order, equal json, equal decoded videos.

    (The mp4 bytes themselves may differ between two encodes of the same frames: libx264 fed rgb24
    frames through PyAV is not bit-reproducible, so decoded frames are compared with a tolerance.)
    """
    names = sorted(p.name for p in (a / "shards").glob("*.tar"))
    assert names == sorted(p.name for p in (b / "shards").glob("*.tar")) and names
    for n in names:
        with tarfile.open(a / "shards" / n) as ta, tarfile.open(b / "shards" / n) as tb:
            ma, mb = ta.getmembers(), tb.getmembers()
            assert [m.name for m in ma] == [m.name for m in mb]
            for x, y in zip(ma, mb, strict=True):
                da, db = ta.extractfile(x).read(), tb.extractfile(y).read()
                if x.name.endswith(".mp4"):
                    fa, fpsa = _decode_mp4(da, tmp_path)
                    fb, fpsb = _decode_mp4(db, tmp_path)
                    assert fa.shape == fb.shape and fpsa == fpsb
                    assert np.abs(fa.astype(np.float32) - fb).mean() < 4.0  # a frame off by one: > 15
                else:
                    assert da == db, x.name


def _decode_mp4(data: bytes, tmp_path):
    p = tmp_path / "decoded.mp4"
    p.write_bytes(data)
    return read_video(p)


def test_output_size_and_resize():
    assert output_size(128, 96, ShardConfig(max_side=64)) == (64, 48)
    assert output_size(100, 50, ShardConfig(max_side=33)) == (32, 16)  # even, never above max_side
    assert output_size(128, 96, ShardConfig(max_side=512)) == (128, 96)  # no upscaling
    assert output_size(128, 96, ShardConfig(size=(32, 32))) == (32, 32)
    # Cover + centre crop: a 4:3 frame to a square keeps the middle columns.
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[:, 16:112] = 200  # the central 96 columns are bright, the 16-column borders dark
    out = resize_frame(frame, (48, 48))
    assert out.shape == (48, 48, 3) and out.min() == 200
    with pytest.raises(ValueError, match="even"):
        ShardConfig(size=(33, 32))


def test_video_and_image_samples(data, tmp_path):
    root, truth, recs = data
    cfg = ShardConfig(fps=4.0, max_side=64)
    out = write_shards(recs, root, tmp_path / "out", cfg, progress=False)
    by_id = {r["clip_id"]: r for r in out}
    assert [by_id[r["clip_id"]]["shard"] for r in recs] == ["shards/video-000000.tar"] * 2 + [
        None, "shards/image-000000.tar"]  # the rejected clip is not written
    kept = [r for r in out if r["status"] == "kept"]
    assert all(r["key"] == r["clip_id"] for r in kept)
    samples = _read_back(tmp_path / "out")
    assert set(samples) == {r["clip_id"] for r in kept}
    source, _ = read_video(root / "vids" / "a.mp4")
    for r, scene in zip(recs[:2], truth.scenes[:2], strict=True):
        s = samples[r["clip_id"]]
        meta = json.loads(s["json"])
        n_expected = (scene.end_frame - scene.start_frame) // 2  # 8 fps source sampled at 4 fps
        assert meta["type"] == "video" and meta["caption"] == scene.caption
        assert (meta["fps"], meta["num_frames"], meta["width"], meta["height"]) == (4.0, n_expected, 64, 48)
        assert meta["source"] == "vids/a.mp4" and meta["start_frame"] == scene.start_frame
        assert meta["motion_score"] == 1.5 and meta["text_area"] == 0.0 and meta["aesthetic_score"] is None
        frames, fps = _decode_mp4(s["mp4"], tmp_path)
        assert frames.shape == (n_expected, 48, 64, 3) and fps == 4.0
        # Written frame k is source frame start + 2k, downscaled: it matches that frame (independent
        # reference: cv2 INTER_AREA of the decoded source) better than any other frame of the scene.
        refs = [cv2.resize(f, (64, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
                for f in source[scene.start_frame:scene.end_frame]]
        for k in range(n_expected):
            errs = [np.abs(frames[k] - ref).mean() for ref in refs]
            assert int(np.argmin(errs)) == 2 * k and min(errs) < 12, (k, np.argmin(errs), min(errs))
    img = samples[recs[3]["clip_id"]]
    meta = json.loads(img["json"])
    assert meta["type"] == "image" and meta["num_frames"] == 1 and (meta["width"], meta["height"]) == (64, 48)
    decoded = cv2.imdecode(np.frombuffer(img["png"], np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (48, 64, 3)


def test_rollover_reproducible_and_missing_source(data, tmp_path):
    root, _, recs = data
    recs = [dict(r, status="kept", reject_reason=None) for r in recs[:3]]
    cfg = ShardConfig(fps=None, max_side=32, max_count=2)
    a = write_shards(recs, root, tmp_path / "a", cfg, progress=False)
    b = write_shards(recs, root, tmp_path / "b", cfg, progress=False)
    names = sorted(p.name for p in (tmp_path / "a" / "shards").glob("*.tar"))
    assert names == ["video-000000.tar", "video-000001.tar"]
    assert_same_shards(tmp_path / "a", tmp_path / "b", tmp_path)
    assert a == b
    with tarfile.open(tmp_path / "a" / "shards" / names[0]) as t:
        assert [m.name.split(".", 1)[1] for m in t.getmembers()] == ["json", "mp4"] * 2
        assert {m.mtime for m in t.getmembers()} == {0}
    frames, _ = _decode_mp4(_read_back(tmp_path / "a")[recs[0]["clip_id"]]["mp4"], tmp_path)
    assert frames.shape == (24, 24, 32, 3)  # source fps kept: every frame of the 24-frame scene
    # A source that disappeared between scoring and sharding becomes an error record, not a crash.
    gone = dict(recs[0], source="vids/missing.mp4", clip_id="missing-0")
    out = write_shards([gone, recs[1]], root, tmp_path / "c", cfg, progress=False)
    assert out[1]["status"] == "error" and "does not exist" in out[1]["error"]
    assert out[0]["status"] == "kept" and out[0]["shard"] == "shards/video-000000.tar"


def test_byte_limit_and_atomic_abort(tmp_path):
    sample = {"__key__": "k0", "bin": b"x" * 2000, "json": b"{}"}
    names = []
    with ShardWriter(tmp_path, "s-", max_count=100, max_bytes=9000,
                     on_shard_done=lambda n, keys, b: names.append((n, keys, b))) as w:
        for i in range(3):
            w.write(dict(sample, __key__=f"k{i}"))
    assert [(n, k) for n, k, _ in names] == [("s-000000.tar", ["k0", "k1"]), ("s-000001.tar", ["k2"])]
    # Tar pads the archive to 10 KiB records; what precedes the end-of-archive blocks stays within the limit.
    for n, _, b in names:
        with tarfile.open(tmp_path / n) as t:
            members = t.getmembers()
            assert members[-1].offset_data + 512 + 1024 <= 9000 and b % 10240 == 0
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "x", "s-") as w:
        w.write(sample)
        raise RuntimeError("killed")
    assert list((tmp_path / "x").iterdir()) == []  # the unfinished shard is discarded


def test_resume_after_interruption(data, tmp_path):
    root, _, recs = data
    recs = [dict(r, status="kept", reject_reason=None) for r in recs]
    cfg = ShardConfig(fps=4.0, max_side=32, max_count=1)
    full = write_shards(recs, root, tmp_path / "full", cfg, progress=False)

    def failing_map(fn, items):
        for i, item in enumerate(items):
            if i == 2:
                raise KeyboardInterrupt
            yield fn(item)

    log = tmp_path / "part" / "shards.log.jsonl"
    with pytest.raises(KeyboardInterrupt):
        write_shards(recs, root, tmp_path / "part", cfg, log_path=log, ordered_map=failing_map, progress=False)
    assert sorted(p.name for p in (tmp_path / "part" / "shards").iterdir()) == ["video-000000.tar",
                                                                                  "video-000001.tar"]
    calls = []

    def counting_map(fn, items):
        for item in items:
            calls.append(item["clip_id"])
            yield fn(item)

    resumed = write_shards(recs, root, tmp_path / "part", cfg, log_path=log, ordered_map=counting_map,
                           progress=False)
    assert calls == [recs[2]["clip_id"], recs[3]["clip_id"]]  # only the unfinished clips are encoded
    assert resumed == full
    assert_same_shards(tmp_path / "full", tmp_path / "part", tmp_path)
    # Changed records (a caption) invalidate the logged shards: they are rewritten, none kept stale.
    recs[0] = dict(recs[0], caption="new caption")
    calls.clear()
    write_shards(recs, root, tmp_path / "part", cfg, log_path=log, ordered_map=counting_map, progress=False)
    assert len(calls) == 3
    meta = json.loads(_read_back(tmp_path / "part")[recs[0]["clip_id"]]["json"])
    assert meta["caption"] == "new caption"
