"""The pipeline on generated videos: manifest fields and statuses, bad files, filters, resume, parts."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ea_data.curation import (
    PipelineConfig,
    ScoreConfig,
    SplitConfig,
    apply_filter_stage,
    list_inputs,
    output_paths,
    run,
    select_part,
)
from ea_data.filters import FilterConfig
from ea_data.manifest import RECORD_FIELDS, read_jsonl
from ea_data.shards import ShardConfig
from ea_data.synthetic import SceneSpec, make_dataset, make_video

BAD = {"bad/corrupt.mp4", "bad/empty.mp4", "bad/truncated.mp4", "bad/notes.mp4", "bad/broken.png"}


def make_inputs(root):
    """3 synthetic videos + 2 images, a video with a too-short scene, and five unreadable files."""
    meta = make_dataset(root, num_videos=3, num_images=2, seed=5)
    rng = np.random.default_rng(7)
    # 5 s slow scene, then a 2 s scene (too short), then a 4 s static scene.
    short = make_video(root / "videos" / "short_scene.mp4",
                       [SceneSpec.random(rng, 40, "slow"), SceneSpec.random(rng, 16, "fast"),
                        SceneSpec.random(rng, 32, "static")], fps=8)
    (root / "bad").mkdir()
    good = (root / "videos" / "video_000.mp4").read_bytes()
    (root / "bad" / "corrupt.mp4").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (root / "bad" / "empty.mp4").write_bytes(b"")
    (root / "bad" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "bad" / "notes.mp4").write_text("not a video, just text renamed to .mp4\n")
    (root / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (root / "readme.txt").write_text("ignored")
    return meta, short


def config(**kw):
    kw.setdefault("score", ScoreConfig(scorers=("motion",)))
    kw.setdefault("shard", ShardConfig(fps=4.0, max_side=32, max_count=3))
    return PipelineConfig(progress=False, **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    meta, short = make_inputs(root)
    out = tmp_path_factory.mktemp("reference")
    summary = run(root, out, config())
    return root, meta, short, out, summary


def test_inputs_listed_by_extension(data):
    root, *_ = data
    inputs = list_inputs(root)
    assert inputs.videos == sorted(["videos/video_000.mp4", "videos/video_001.mp4", "videos/video_002.mp4",
                                    "videos/short_scene.mp4", "bad/corrupt.mp4", "bad/empty.mp4",
                                    "bad/truncated.mp4", "bad/notes.mp4"])
    assert inputs.images == ["bad/broken.png", "images/image_000.png", "images/image_001.png"]
    assert "readme.txt" in inputs.ignored and "metadata.jsonl" in inputs.ignored


def test_manifest_fields_statuses_and_coverage(data):
    root, meta, short, out, summary = data
    records = read_jsonl(out / "manifest.jsonl")
    assert all(set(r) == set(RECORD_FIELDS) for r in records)
    assert all(r["status"] in ("kept", "rejected", "error") for r in records)
    assert records == sorted(records, key=lambda r: (r["source"], r["start_frame"], r["end_frame"], r["clip_id"]))
    # Every frame of every readable video is in exactly one record (clips + rejected scenes).
    videos = {m["file"]: m for m in meta if m["type"] == "video"}
    videos["videos/short_scene.mp4"] = {"num_frames": short.num_frames, "fps": 8.0}
    for src, m in videos.items():
        spans = sorted((r["start_frame"], r["end_frame"]) for r in records if r["source"] == src)
        assert spans[0][0] == 0 and spans[-1][1] == m["num_frames"], src
        assert all(a[1] == b[0] for a, b in zip(spans[:-1], spans[1:])), src
        for r in records:
            if r["source"] == src:
                assert r["start_time"] == pytest.approx(r["start_frame"] / m["fps"])
                assert (r["fps"], r["width"], r["height"]) == (m["fps"], 128, 96)
    # Decisions follow the stored scores and the default thresholds (motion band 2..20).
    for r in records:
        if r["status"] == "kept" and r["type"] == "video":
            assert 2.0 <= r["motion_score"] <= 20.0 and 3.0 <= r["end_time"] - r["start_time"] <= 10.0
            assert r["shard"] and r["key"] == r["clip_id"]
        elif r["reject_reason"] == "motion_low":
            assert r["motion_score"] < 2.0
        elif r["reject_reason"] == "motion_high":
            assert r["motion_score"] > 20.0
    # The 2 s scene of short_scene.mp4 (frames 40..56) is rejected as too short, not scored.
    s = [r for r in records if r["source"] == "videos/short_scene.mp4"]
    too_short = [r for r in s if r["reject_reason"] == "too_short"]
    assert len(too_short) == 1 and abs(too_short[0]["start_frame"] - 40) <= 1
    assert abs(too_short[0]["end_frame"] - 56) <= 1 and too_short[0]["motion_score"] is None
    # Clips inside a static scene are rejected for low motion (the scene truth says which are static;
    # a clip spanning a missed cut is not checked here).
    inside = [r for m in meta for scene in m.get("scenes", []) if scene["static"] for r in records
              if r["source"] == m["file"] and r["start_frame"] >= scene["start_frame"]
              and r["end_frame"] <= scene["end_frame"]]
    assert len(inside) >= 2 and all(r["reject_reason"] == "motion_low" for r in inside)
    assert sum(r["status"] == "kept" for r in records if r["type"] == "video") >= 2
    assert [r["status"] for r in records if r["type"] == "image" and r["source"] not in BAD] == ["kept", "kept"]


def test_bad_files_recorded_and_counted(data):
    _, _, _, out, summary = data
    records = read_jsonl(out / "manifest.jsonl")
    errors = {r["source"]: r for r in records if r["status"] == "error"}
    assert set(errors) == BAD
    for src, r in errors.items():
        assert r["error"] and r["shard"] is None and (r["type"] == "image") == src.endswith(".png")
    assert "empty (0 bytes)" in errors["bad/empty.mp4"]["error"]
    assert "bad/notes.mp4" in errors["bad/notes.mp4"]["error"]
    assert summary["errors"] == 5 and summary["error_files"] == sorted(BAD)
    assert summary["videos"] == 8 and summary["images"] == 3 and summary["ignored_files"] >= 1
    saved = json.loads((out / "summary.json").read_text())
    kept = [r for r in records if r["status"] == "kept" and r["type"] == "video"]
    assert saved["clips_kept"] == len(kept)
    assert saved["hours_kept"] == pytest.approx(sum(r["end_time"] - r["start_time"] for r in kept) / 3600,
                                                abs=1e-5)
    rejected = {}
    for r in records:
        if r["status"] == "rejected":
            rejected[r["reject_reason"]] = rejected.get(r["reject_reason"], 0) + 1
    assert saved["rejected"] == rejected


def test_shards_hold_the_kept_clips(data):
    import webdataset as wds

    _, _, _, out, _ = data
    records = read_jsonl(out / "manifest.jsonl")
    kept = {r["clip_id"]: r for r in records if r["status"] == "kept"}
    urls = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(kept)
    for s in samples:
        meta = json.loads(s["json"])
        r = kept[s["__key__"]]
        assert meta["source"] == r["source"] and meta["type"] == r["type"]
        if r["type"] == "video":
            # Every other frame of the 8 fps source: frames start, start + 2, ... < end.
            assert meta["num_frames"] == (r["end_frame"] - r["start_frame"] + 1) // 2 and meta["fps"] == 4.0
            assert (meta["width"], meta["height"]) == (32, 24) and "mp4" in s


def assert_same_outputs(a, b):
    """Same manifest text; same shard files with the same keys and json (mp4s re-encoded separately)."""
    import webdataset as wds

    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()
    names = sorted(p.name for p in (a / "shards").glob("*.tar"))
    assert names == sorted(p.name for p in (b / "shards").glob("*.tar"))
    for n in names:
        sa = list(wds.WebDataset(str(a / "shards" / n), shardshuffle=False))
        sb = list(wds.WebDataset(str(b / "shards" / n), shardshuffle=False))
        assert [(s["__key__"], s["json"]) for s in sa] == [(s["__key__"], s["json"]) for s in sb]


def test_resume_after_failure_equals_uninterrupted(data, tmp_path):
    root, _, _, ref, ref_summary = data
    out = tmp_path / "out"
    seen = []

    def stop_after_three(entry):
        seen.append(entry["source"])
        if len(seen) == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run(root, out, config(), on_file_done=stop_after_three)
    assert not (out / "manifest.jsonl").exists()
    assert len(read_jsonl(output_paths(out)["scan_log"])) == 3
    summary = run(root, out, config())
    assert summary["files_resumed"] == 3 and summary["files_processed"] == 11 - 3
    assert_same_outputs(ref, out)
    # A complete output directory is left as it is by a rerun (idempotent).
    again = run(root, out, config())
    assert again["files_processed"] == 0
    assert_same_outputs(ref, out)


def test_changed_filters_refilter_without_rescoring(data, tmp_path):
    root, _, _, ref, _ = data
    out = tmp_path / "out"
    run(root, out, config(write_shards=False))
    loose = FilterConfig(min_motion=None, max_motion=None)
    summary = run(root, out, config(filter=loose, write_shards=False))
    assert summary["files_processed"] == 0  # scores came from the work log
    records = read_jsonl(out / "manifest.jsonl")
    assert not any(r["reject_reason"] in ("motion_low", "motion_high") for r in records)
    # Same decisions as re-filtering the reference manifest offline.
    offline = apply_filter_stage(read_jsonl(ref / "manifest.jsonl"), loose, progress=False)
    strip = [{k: v for k, v in r.items() if k not in ("shard", "key")} for r in offline]
    assert strip == [{k: v for k, v in r.items() if k not in ("shard", "key")} for r in records]
    # A changed split/score config invalidates the log: everything is processed again.
    summary = run(root, out, config(split=SplitConfig(min_seconds=2.0), write_shards=False))
    assert summary["files_processed"] == 11


def test_parts_partition_and_merge(data, tmp_path):
    root, _, _, ref, _ = data
    names = [f"dir{i % 7}/video_{i:04d}.mp4" for i in range(200)]
    parts = [select_part(names, i, 3) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(names)  # every input in exactly one part
    assert all(40 < len(p) < 90 for p in parts)  # and spread roughly evenly
    assert select_part(names + ["new.mp4"], 1, 3)[: len(parts[1])] == parts[1]  # stable when files are added
    out = tmp_path / "out"
    s0 = run(root, out, config(shard_index=0, num_shards=2))
    assert not (out / "manifest.jsonl").exists()  # merged only when every part is done
    s1 = run(root, out, config(shard_index=1, num_shards=2))
    assert s0["files_processed"] + s1["files_processed"] == 11 and min(s0["files_processed"],
                                                                       s1["files_processed"]) > 0
    merged = read_jsonl(out / "manifest.jsonl")
    single = read_jsonl(ref / "manifest.jsonl")

    def strip(rs):
        return [{k: v for k, v in r.items() if k not in ("shard", "key")} for r in rs]

    assert strip(merged) == strip(single)
    shards = {r["shard"].split("/")[1][:7] for r in merged if r["shard"]}
    assert shards <= {"p00000-", "p00001-"}


def test_text_filter_rejects_the_text_scene(tmp_path):
    rng = np.random.default_rng(11)
    root = tmp_path / "in"
    truth = make_video(root / "t.mp4", [SceneSpec.random(rng, 28, "slow", text_area=0.03, num_shapes=1),
                                       SceneSpec.random(rng, 28, "slow", num_shapes=1)], width=320, height=240, fps=8)
    summary = run(root, tmp_path / "out", config(score=ScoreConfig(scorers=("motion", "text"), sample_fps=1.0)))
    records = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert [(r["start_frame"], r["end_frame"]) for r in records] == [(0, 28), (28, 56)]
    text, plain = records
    # (How closely OCR measures the plate is test_scoring's business; here: the scores reach the filter.)
    assert text["text_area"] == pytest.approx(truth.scenes[0].text_area, abs=0.02)
    assert text["text_area"] > 0.01 and plain["text_area"] < 0.01
    assert (text["status"], text["reject_reason"]) == ("rejected", "text_area")
    assert plain["status"] == "kept" and summary["rejected"] == {"text_area": 1}


@pytest.mark.slow
def test_killed_process_resumes_to_same_manifest(data, tmp_path):
    """SIGKILL a real `ea-data run` process once its work log has a record, then resume it."""
    root, _, _, ref, _ = data
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ea_data", "run", str(root), str(out), "--scorers", "motion", "--quiet",
           "--shard-fps", "4", "--shard-max-side", "32", "--shard-size", "3"]
    log = output_paths(out)["scan_log"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and log.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(read_jsonl(log, allow_partial=True))
    assert 1 <= done < 11, "the run was not killed midway"
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert_same_outputs(ref, out)


@pytest.mark.slow
def test_process_pool_gives_the_same_manifest(data, tmp_path):
    root, _, _, ref, _ = data
    summary = run(root, tmp_path / "out", config(workers=2))
    assert summary["files_processed"] == 11
    assert_same_outputs(ref, tmp_path / "out")
