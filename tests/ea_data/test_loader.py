"""Bucketed WebDataset loader on tiny synthetic shards: shapes, frames, splitting, determinism, resume."""

import json
import logging
import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import webdataset as wds

from ea_data.loader import LoaderConfig, make_dataloader
from ea_data.synthetic import SceneSpec, make_image, make_video
from ea_vae.video_io import frames_to_tensor, read_video

# (name, width, height, frames, expected bucket (h, w) at base 64)
VIDEOS = (
    [(f"land{i}", 80, 64, 16 + 4 * (i % 3), (64, 80)) for i in range(7)]
    + [(f"port{i}", 64, 80, 20, (80, 64)) for i in range(4)]
    + [(f"odd{i}", 96, 64, 20, (48, 80)) for i in range(2)]
    + [(f"small{i}", 48, 48, 24, (64, 64)) for i in range(2)]
    + [("short0", 80, 64, 6, (64, 80))]
)
IMAGES = [(f"img{i}", 80, 64, "png", (64, 80)) for i in range(5)] + [
    (f"sq{i}", 64, 64, "jpg", (64, 64)) for i in range(5)]
NUM_SHARDS = 4


def _write_shards(root: Path, samples: list[dict]) -> list[str]:
    paths = [str(root / f"data-{i:03d}.tar") for i in range(NUM_SHARDS)]
    writers = [wds.TarWriter(p) for p in paths]
    for i, s in enumerate(samples):
        writers[i % NUM_SHARDS].write(s)
    for w in writers:
        w.close()
    return paths


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four shards of 16 short clips and 10 images, plus the source files for independent decoding."""
    root = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    samples, expected, files = [], {}, {}
    for name, w, h, n, bucket in VIDEOS:
        path = root / f"{name}.mp4"
        truth = make_video(path, [SceneSpec.random(rng, n, motion="fast")], width=w, height=h, fps=8)
        meta = {"caption": truth.scenes[0].caption, "type": "video", "fps": 8.0, "num_frames": n,
                "width": w, "height": h, "motion_score": 1.0}
        samples.append({"__key__": name, "mp4": path.read_bytes(), "json": json.dumps(meta).encode()})
        expected[name], files[name] = ("video", bucket, n), path
    for name, w, h, ext, bucket in IMAGES:
        path = root / f"{name}.{ext}"
        if ext == "png":
            info = make_image(path, SceneSpec.random(rng, 1, motion="static"), width=w, height=h)
        else:
            info = make_image(root / f"{name}.png", SceneSpec.random(rng, 1, motion="static"), width=w, height=h)
            cv2.imwrite(str(path), cv2.imread(info["path"]), [cv2.IMWRITE_JPEG_QUALITY, 95])
        meta = {"caption": info["caption"], "type": "image", "fps": 0, "num_frames": 1, "width": w, "height": h}
        samples.append({"__key__": name, ext: path.read_bytes(), "json": json.dumps(meta).encode()})
        expected[name], files[name] = ("image", bucket, 1), path
    order = rng.permutation(len(samples))  # mix images and videos across shards
    shards = _write_shards(root, [samples[i] for i in order])
    return {"shards": shards, "expected": expected, "files": files, "root": root}


def cfg(**kw):
    base = dict(resolution=64, num_frames=9, batch_size=2, image_batch_size=3, shuffle_buffer=8,
                num_workers=0, max_batch_size=8)
    base.update(kw)
    return LoaderConfig(**base)


def collect(loader):
    return list(loader)


def keys_of(batches):
    return [k for b in batches for k in b["key"]]


def test_batches_single_bucket_shapes_and_full_cover(data):
    loader = make_dataloader(data["shards"], cfg())
    batches = collect(loader)
    keys = keys_of(batches)
    assert sorted(keys) == sorted(data["expected"])  # every sample exactly once
    partial = Counter()
    for b in batches:
        x = b["pixel_values"]
        kind, h, w, f = b["bucket"]
        assert x.dtype == torch.float32 and x.shape == (len(b["key"]), 3, f, h, w)
        assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.05
        assert (f - 1) % 4 == 0
        assert b["type"] == kind
        full = 2 if kind == "video" else 3
        assert len(b["key"]) <= full
        partial[b["bucket"]] += len(b["key"]) < full
        for key, meta in zip(b["key"], b["meta"], strict=True):
            exp_kind, exp_hw, n = data["expected"][key]
            assert meta["type"] == exp_kind == kind  # images never batched with videos
            assert (h, w) == exp_hw
            assert f == (1 if kind == "image" else min(9, (n - 1) // 4 * 4 + 1))
    assert max(partial.values()) <= 1  # at most one leftover batch per bucket
    assert loader.stats["samples"] == len(data["expected"]) and loader.stats["skipped"] == 0


def test_frames_and_stride_match_independent_decode(data):
    loader = make_dataloader(data["shards"], cfg(frame_stride=2, num_frames=5, shuffle=False))
    starts, checked = [], 0
    for b in loader:
        if b["type"] != "video" or b["bucket"].height == 48 or b["bucket"].width == 64 and b["bucket"].height == 64:
            continue  # resized buckets are checked below; here native-size clips only
        for i, key in enumerate(b["key"]):
            frames, _ = read_video(data["files"][key])
            n, start = len(frames), int(b["start_frame"][i])
            f = b["bucket"].frames
            assert 0 <= start and start + (f - 1) * 2 < n
            want = frames_to_tensor(frames[start:start + 2 * f - 1:2])
            torch.testing.assert_close(b["pixel_values"][i], want, atol=1e-6, rtol=0)
            if f > 1:  # stride 1 would give different frames (the camera moves fast)
                wrong = frames_to_tensor(frames[start:start + f])
                assert (b["pixel_values"][i] - wrong).abs().mean() > 0.02
            starts.append(start)
            checked += 1
    assert checked >= 10 and len(set(starts)) > 1  # random, seeded starts


def test_resize_and_center_crop_match_opencv(data):
    loader = make_dataloader(data["shards"], cfg(random_start=False))
    checked = 0
    for b in loader:
        for i, key in enumerate(b["key"]):
            if not key.startswith(("odd", "small")):
                continue
            kind, h, w, f = b["bucket"]
            frames, _ = read_video(data["files"][key])
            start = int(b["start_frame"][i])
            assert start == (len(frames) - f) // 2  # centred clip
            clip = frames[start:start + f]
            src_h, src_w = clip.shape[1:3]
            scale = max(h / src_h, w / src_w)
            nh, nw = round(src_h * scale), round(src_w * scale)
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            ref = np.stack([cv2.resize(fr, (nw, nh), interpolation=interp) for fr in clip])
            top, left = (nh - h) // 2, (nw - w) // 2
            ref = frames_to_tensor(ref[:, top:top + h, left:left + w])
            diff = (b["pixel_values"][i] - ref).abs()
            assert diff.mean() < 0.04, (key, diff.mean())
            checked += 1
    assert checked == 4


@pytest.mark.parametrize("split", ["shard", "sample"])
def test_workers_and_ranks_disjoint_cover(data, split):
    seen, workers = [], set()
    for rank in range(2):
        loader = make_dataloader(data["shards"], cfg(num_workers=2, split=split), rank=rank, world_size=2)
        for b in loader:
            seen += b["key"]
            workers.add((rank, b["worker"]))
    assert sorted(seen) == sorted(data["expected"])  # disjoint (no duplicates) and complete
    assert len(workers) == 4  # every rank x worker slot got data


def test_single_rank_two_workers_cover(data):
    loader = make_dataloader(data["shards"], cfg(num_workers=2))
    batches = collect(loader)
    assert sorted(keys_of(batches)) == sorted(data["expected"])
    assert {b["worker"] for b in batches} == {0, 1}


def test_deterministic_given_seed_and_epoch(data):
    a = collect(make_dataloader(data["shards"], cfg(seed=3)))
    b = collect(make_dataloader(data["shards"], cfg(seed=3)))
    assert keys_of(a) == keys_of(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["pixel_values"], y["pixel_values"])
        assert torch.equal(x["start_frame"], y["start_frame"])
    c = collect(make_dataloader(data["shards"], cfg(seed=4)))
    loader = make_dataloader(data["shards"], cfg(seed=3))
    loader.set_epoch(1)
    d = collect(loader)
    assert keys_of(c) != keys_of(a) and keys_of(d) != keys_of(a)
    assert sorted(keys_of(d)) == sorted(keys_of(a))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_yields_the_remainder(data, num_workers):
    config = cfg(num_workers=num_workers, seed=1)
    full = collect(make_dataloader(data["shards"], config))
    assert len(full) > 6
    for k in (1, 4, len(full) - 1):
        loader = make_dataloader(data["shards"], config)
        it = iter(loader)
        for _ in range(k):
            next(it)
        state = json.loads(json.dumps(loader.state_dict()))  # must survive a JSON checkpoint
        del it
        assert state["batches_consumed"] == k
        resumed = make_dataloader(data["shards"], config)
        resumed.load_state_dict(state)
        resumed.set_epoch(state["epoch"])  # a training loop does this; it keeps the resume point
        rest = collect(resumed)
        assert [b["key"] for b in rest] == [b["key"] for b in full[k:]], k
        for x, y in zip(rest, full[k:], strict=True):
            assert torch.equal(x["pixel_values"], y["pixel_values"])
        assert resumed.state_dict()["batches_consumed"] == len(full)
    # the next epoch after a resumed one starts from its beginning
    resumed.set_epoch(1)
    assert sorted(keys_of(collect(resumed))) == sorted(data["expected"])
    with pytest.raises(ValueError, match="world_size"):
        make_dataloader(data["shards"], config, rank=0, world_size=2).load_state_dict(state)


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_image_video_ratio(data, ratio):
    loader = make_dataloader(data["shards"], cfg(image_video_ratio=ratio, batch_size=1, image_batch_size=1))
    kinds = [b["type"] for b in loader]
    assert len(kinds) == len(data["expected"])
    # while both kinds remain, images make up ratio / (1 + ratio) of the batches (within one batch)
    n_img, n_vid = kinds.count("image"), kinds.count("video")
    p = ratio / (1 + ratio)
    both = min(n_img / p, n_vid / (1 - p))
    for n in range(1, int(both) + 1):
        assert abs(kinds[:n].count("image") - p * n) <= 1, (n, kinds)
    natural = [b["type"] for b in make_dataloader(data["shards"], cfg(batch_size=1, image_batch_size=1))]
    assert sorted(natural) == sorted(kinds) and natural != kinds


@pytest.mark.parametrize("kind", ["image", "video"])
def test_kinds_reads_one_kind_only(data, kind):
    """kinds=("image",) is the image training stage's data: every image once, no video (and no error)."""
    loader = make_dataloader(data["shards"], cfg(kinds=(kind,)))
    keys = keys_of(collect(loader))
    assert sorted(keys) == sorted(k for k, (t, _, _) in data["expected"].items() if t == kind)
    assert loader.stats["skipped"] == 0
    with pytest.raises(ValueError, match="kinds must be a non-empty subset"):
        cfg(kinds=("audio",))


def test_drop_last_counts_dropped_samples(data):
    loader = make_dataloader(data["shards"], cfg(drop_last=True, batch_size=3))
    batches = collect(loader)
    assert all(len(b["key"]) == 3 for b in batches)
    assert loader.stats["dropped"] > 0
    assert loader.stats["samples"] + loader.stats["dropped"] == len(data["expected"])
    assert len(set(keys_of(batches))) == loader.stats["samples"]


def test_token_length_buckets_scale_batch_size(data):
    budget = 9 * 64 * 64
    config = cfg(bucket_by="token_length", resolutions=(48, 64), token_budget=budget, num_frames=17,
                 batch_size=4, max_batch_size=8)
    batches = collect(make_dataloader(data["shards"], config))
    assert sorted(keys_of(batches)) == sorted(data["expected"])
    seen_frames = {}
    for b in batches:
        kind, h, w, f = b["bucket"]
        assert b["pixel_values"].shape[2:] == (f, h, w)
        full = min(8, max(1, math.floor(4 * budget / (f * h * w))))
        assert len(b["key"]) <= full
        if len(b["key"]) == full and full < 8:  # uncapped full batch: about 4 budgets of pixels
            assert 0.5 * 4 * budget < full * f * h * w <= 4 * budget
        for key in b["key"]:
            seen_frames[key] = (f, h, w)
    # 48x48 clips (smaller than 64^2) get base 48: 9 * 64^2 / 48^2 = 16 -> 13 frames; 80x64 gets 9
    assert seen_frames["small0"] == (13, 48, 48)
    assert seen_frames["land0"] == (9, 64, 80)
    assert seen_frames["short0"][0] == 5 and seen_frames["img0"][0] == 1


@pytest.fixture(scope="module")
def corrupt_shards(data):
    """The good shards plus one holding a truncated mp4, garbage png and broken json."""
    good = data["files"]["land0"].read_bytes()
    meta = {"caption": "x", "type": "video", "fps": 8.0, "num_frames": 16, "width": 80, "height": 64}
    bad = [
        {"__key__": "bad_mp4", "mp4": good[: len(good) // 3], "json": json.dumps(meta).encode()},
        {"__key__": "bad_png", "png": b"\x89PNG not really",
         "json": json.dumps({"type": "image", "width": 80, "height": 64}).encode()},
        {"__key__": "bad_json", "mp4": good, "json": b"{not json"},
    ]
    path = data["root"] / "corrupt.tar"
    with wds.TarWriter(str(path)) as w:
        for s in bad:
            w.write(s)
    return data["shards"] + [str(path)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_samples_are_logged_skipped_and_counted(data, corrupt_shards, num_workers, caplog):
    caplog.set_level(logging.WARNING, logger="ea_data.loader")
    loader = make_dataloader(corrupt_shards, cfg(num_workers=num_workers))
    batches = collect(loader)
    assert sorted(keys_of(batches)) == sorted(data["expected"])
    assert loader.stats["skipped"] == 3
    assert sorted(loader.skipped_keys) == ["bad_json", "bad_mp4", "bad_png"]
    if num_workers == 0:  # worker processes log to their own stderr
        text = caplog.text
        assert all(k in text for k in ("bad_json", "bad_mp4", "bad_png"))


def test_size_and_frame_count_probed_when_json_lacks_them(data, tmp_path):
    path = str(tmp_path / "bare.tar")
    with wds.TarWriter(path) as w:
        w.write({"__key__": "bare_video", "mp4": data["files"]["port0"].read_bytes(),
                 "json": json.dumps({"caption": "no sizes"}).encode()})
        w.write({"__key__": "bare_image", "png": data["files"]["img0"].read_bytes()})
    batches = collect(make_dataloader([path], cfg(batch_size=1, image_batch_size=1)))
    got = {b["key"][0]: (b["bucket"], b["caption"][0]) for b in batches}
    assert got["bare_video"] == (("video", 80, 64, 9), "no sizes")
    assert got["bare_image"] == (("image", 64, 80, 1), "")


def test_config_validation(data):
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        LoaderConfig(num_frames=8)
    with pytest.raises(ValueError, match="bucket_by"):
        LoaderConfig(bucket_by="size")
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        make_dataloader([str(data["root"] / "missing.tar")], cfg())


def test_batches_come_in_the_vae_layout_and_encode_without_a_copy(data):
    """Loader batches are frames-first channels-last in memory; the VAE takes them as a view, same result."""
    from ea_vae import SliceVAE, SliceVAEConfig
    from ea_vae.layout import to_frames

    batches = [b for b in make_dataloader(data["shards"], cfg(shuffle=False)) if b["type"] == "video"]
    for b in batches:
        assert b["pixel_values"].is_contiguous(memory_format=torch.channels_last_3d)
    x = batches[0]["pixel_values"]
    frames = to_frames(x)
    assert frames.data_ptr() == x.data_ptr() and frames.untyped_storage().nbytes() == x.numel() * 4  # a view
    plain = x.contiguous()  # the old (B, 3, F, H, W)-contiguous batch: to_frames must copy it
    assert to_frames(plain).data_ptr() != plain.data_ptr()
    torch.testing.assert_close(to_frames(plain), frames, atol=0, rtol=0)
    before = x.clone()
    vae = SliceVAE(SliceVAEConfig.tiny()).eval()
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(x).mean, vae.encode(plain).mean, atol=0, rtol=0)
    assert torch.equal(x, before)  # the encoder never writes into the batch it was given
