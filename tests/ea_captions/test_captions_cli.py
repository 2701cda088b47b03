"""The `ea-captions` command over manifests and WebDataset shards: whole runs, resume, bad clips."""

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ea_captions.captioner import GenerationSettings
from ea_captions.cli import main
from ea_captions.metadata import best_scene
from ea_captions.postprocess import PostprocessConfig, clean_caption
from ea_captions.run import caption_manifest, caption_shards
from ea_captions.sampling import FrameSampling, load_clip
from ea_captions.vlm import VLMCaptioner
from ea_data.manifest import read_jsonl, write_jsonl

BAD = ("videos/corrupt.mp4", "videos/missing.mp4")
# Generation and post-processing flags of the model runs (the random model never stops by itself).
QWEN_FLAGS = ["--max-new-tokens", "10", "--keep-truncated", "--min-words", "1", "--num-frames", "4",
              "--device", "cpu", "--dtype", "float32", "--no-progress"]


def _write_manifest(folder: Path, synthetic_data, make_manifest) -> Path:
    root, records = synthetic_data
    path = folder / "manifest.jsonl"
    write_jsonl(path, make_manifest(records, bad_sources=BAD))
    return path


@pytest.fixture(scope="module")
def bad_root(synthetic_data, tmp_path_factory):
    """The synthetic files plus a corrupt mp4 (a missing one is just absent)."""
    root, _ = synthetic_data
    out = tmp_path_factory.mktemp("with-bad")
    shutil.copytree(root, out, dirs_exist_ok=True)
    (out / BAD[0]).write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return out


@pytest.fixture(scope="module")
def qwen_run(tiny_qwen2vl, synthetic_data, bad_root, make_manifest, tmp_path_factory):
    """One uninterrupted CLI run with the tiny Qwen2-VL: (input manifest, output manifest, stdout)."""
    folder = tmp_path_factory.mktemp("qwen-run")
    manifest = _write_manifest(folder, synthetic_data, make_manifest)
    out = folder / "captioned.jsonl"
    argv = [str(manifest), "--output", str(out), "--root", str(bad_root), "--backend", "qwen2vl",
            "--model", str(tiny_qwen2vl), "--batch-size", "3", *QWEN_FLAGS]
    return manifest, out, argv


def test_manifest_run_with_qwen2vl(qwen_run, tiny_qwen2vl, bad_root, capsys):
    manifest, out, argv = qwen_run
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "captioned now" in summary and "unreadable: 2" in summary
    before, after = read_jsonl(manifest), read_jsonl(out)
    assert [r["clip_id"] for r in after] == [r["clip_id"] for r in before]
    assert not out.with_name(out.name + ".caption-log.jsonl").exists()  # log removed when complete

    rejected = [(b, a) for b, a in zip(before, after, strict=True) if b["status"] != "kept"]
    assert rejected and all(a == b for b, a in rejected)  # untouched
    bad = [a for a in after if a["source"] in BAD]
    assert len(bad) == 2
    for a in bad:
        assert a["caption"] == "" and a["caption_error"].startswith("unreadable:")
        assert Path(a["source"]).name in a["caption_error"]

    # Reference: each clip captioned alone (batch of one) through the library, then post-processed.
    ref = VLMCaptioner.from_pretrained(tiny_qwen2vl, generation=GenerationSettings(max_new_tokens=10))
    post = PostprocessConfig(min_words=1, reject_truncated=False)
    good = [a for a in after if a["status"] == "kept" and a["source"] not in BAD]
    assert len(good) == 8
    for a in good:
        assert a["caption_model"] == f"qwen2vl:{tiny_qwen2vl}"
        clip = load_clip(a["clip_id"], bad_root / a["source"], a["start_time"],
                         a["end_time"] if a["type"] == "video" else None, FrameSampling(4),
                         is_image=a["type"] == "image")
        r = ref.caption([clip])[0]
        expected = clean_caption(r.text, r.finished, post)
        assert (a["caption"], a["caption_error"]) == (expected.caption, expected.reason)
    assert sum(bool(a["caption"]) for a in good) >= 4


class _Interrupt:
    """Wraps a captioner and raises KeyboardInterrupt on call number `at` (like a Ctrl-C or a kill)."""

    def __init__(self, inner, at):
        self.inner, self.at, self.calls = inner, at, 0
        self.name, self.needs_frames = inner.name, inner.needs_frames

    def caption(self, clips):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.inner.caption(clips)


def test_resumed_run_equals_uninterrupted(qwen_run, tiny_qwen2vl, bad_root, synthetic_data, make_manifest,
                                         tmp_path, capsys):
    _, uninterrupted, argv = qwen_run
    if not uninterrupted.exists():
        assert main(argv) == 0
    manifest = _write_manifest(tmp_path, synthetic_data, make_manifest)
    original = read_jsonl(manifest)
    log = manifest.with_name(manifest.name + ".caption-log.jsonl")
    cap = VLMCaptioner.from_pretrained(tiny_qwen2vl, generation=GenerationSettings(max_new_tokens=10))
    post = PostprocessConfig(min_words=1, reject_truncated=False)
    with pytest.raises(KeyboardInterrupt):
        caption_manifest(manifest, _Interrupt(cap, at=3), root=bad_root, sampling=FrameSampling(4),
                         batch_size=2, postprocess=post, save_every=0, progress=False)
    assert read_jsonl(manifest) == original  # the manifest is only replaced when complete (save_every=0)
    logged = read_jsonl(log)
    assert len(logged) == 4  # two finished batches of two
    with open(log, "a") as f:
        f.write('{"clip_id": "cut short by the kil')  # a line torn by the kill
    # Continue through the CLI with another batch size: greedy captions do not depend on batching.
    resumed_argv = [str(manifest), "--root", str(bad_root), "--model", str(tiny_qwen2vl), "--batch-size", "4",
                    *QWEN_FLAGS]
    assert main(resumed_argv) == 0
    assert "4 taken from the work log" in capsys.readouterr().out
    assert read_jsonl(manifest) == read_jsonl(uninterrupted)
    assert not log.exists()

    # Running again changes nothing: every kept clip already has a caption or a recorded error.
    assert main(resumed_argv) == 0
    assert "captioned now: 0, failed: 0" in capsys.readouterr().out
    assert read_jsonl(manifest) == read_jsonl(uninterrupted)


def _expected_metadata_caption(rec, records_by_file):
    meta = records_by_file[rec["source"]]
    if rec["type"] == "image":
        return meta["caption"]
    return best_scene(meta["scenes"], rec["start_time"], rec["end_time"])["caption"]


def test_metadata_backend_command_line(synthetic_data, bad_root, make_manifest, tmp_path):
    root, records = synthetic_data
    manifest = _write_manifest(tmp_path, synthetic_data, make_manifest)
    # The console entry point, as a user runs it.
    proc = subprocess.run([sys.executable, "-m", "ea_captions", str(manifest), "--backend", "metadata",
                           "--metadata", str(root / "metadata.jsonl"), "--root", str(bad_root), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "captioned now: 8, failed: 2" in proc.stdout
    by_file = {r["file"]: r for r in records}
    scene_of = {s["caption"]: (r["file"], i) for r in records if r["type"] == "video"
                for i, s in enumerate(r["scenes"])}
    straddling = 0
    for rec in read_jsonl(manifest):
        if rec["status"] != "kept":
            assert "caption_model" not in rec
        elif rec["source"] in BAD:
            assert rec["caption"] == "" and rec["caption_error"].startswith("captioner: no metadata")
        else:
            assert rec["caption"] == _expected_metadata_caption(rec, by_file)
            assert rec["caption_model"] == f"metadata:{root / 'metadata.jsonl'}"
            if rec["type"] == "video" and rec["end_frame"] - rec["start_frame"] == 12:
                # the clip straddling a cut (3 frames before, 9 after) gets the second scene
                assert scene_of[rec["caption"]] == (rec["source"], 1)
                straddling += 1
    assert straddling == 2


def test_cli_argument_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nope.jsonl"), "--backend", "metadata", "--metadata", "x"]) == 2
    assert "nope.jsonl: manifest file does not exist" in capsys.readouterr().err
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    with pytest.raises(SystemExit, match="needs --model"):
        main([str(manifest), "--backend", "qwen2vl"])
    assert main([str(tmp_path), "--shards", "--backend", "metadata", "--metadata", "x"]) == 2
    assert "no .tar shards" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ shards


@pytest.fixture(scope="module")
def shard_dir(synthetic_data, make_manifest, tmp_path_factory):
    """WebDataset shards written by ea_data's shard stage (3 samples per shard) plus one broken sample."""
    from ea_data.shards import ShardConfig, write_shards

    root, records = synthetic_data
    out = tmp_path_factory.mktemp("dataset")
    write_shards(make_manifest(records), root, out, ShardConfig(fps=None, max_side=None, max_count=3),
                 progress=False)
    shards = out / "shards"
    broken = shards / "video-broken.tar"
    with tarfile.open(broken, "w") as tar:
        for name, data in [("bad-clip.mp4", b"garbage"), ("bad-clip.json", b'{"caption": "", "type": "video"}')]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return shards


def _members(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_shards_with_qwen2vl(shard_dir, tiny_qwen2vl, tmp_path):
    out = tmp_path / "captioned"
    before = {p.name: _members(p) for p in shard_dir.glob("*.tar")}
    assert main([str(shard_dir), "--shards", "--output-dir", str(out), "--model", str(tiny_qwen2vl),
                 "--batch-size", "2", *QWEN_FLAGS]) == 0
    assert {p.name: _members(p) for p in shard_dir.glob("*.tar")} == before  # inputs untouched
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(before)
    n_ok = 0
    for name, members in before.items():
        after = _members(out / name)
        assert [m for m, _ in after] == [m for m, _ in members]  # same members, same order
        for (m, old), (_, new) in zip(members, after, strict=True):
            if not m.endswith(".json"):
                assert new == old  # media copied byte for byte
                continue
            old_meta, new_meta = json.loads(old), json.loads(new)
            assert {k: v for k, v in new_meta.items() if not k.startswith("caption")} == \
                {k: v for k, v in old_meta.items() if not k.startswith("caption")}
            assert new_meta["caption_model"] == f"qwen2vl:{tiny_qwen2vl}"
            if name == "video-broken.tar":
                assert new_meta["caption_error"].startswith("unreadable:")
            else:
                assert bool(new_meta["caption"]) != bool(new_meta["caption_error"])
                n_ok += bool(new_meta["caption"])
    assert n_ok >= 4


def test_shards_in_place_resume_with_metadata(shard_dir, synthetic_data, tmp_path):
    from ea_captions.metadata import MetadataCaptioner

    root, records = synthetic_data
    by_file = {r["file"]: r for r in records}
    work = tmp_path / "shards"
    shutil.copytree(shard_dir, work)
    shards = sorted(work.glob("*.tar"))
    cap = MetadataCaptioner(root / "metadata.jsonl")
    with pytest.raises(KeyboardInterrupt):
        caption_shards(shards, _Interrupt(cap, at=3), batch_size=2, progress=False)
    assert (work / ".caption-log.jsonl").exists()
    summary = caption_shards(shards, cap, batch_size=2, progress=False)
    # the first (image) shard was finished before the interruption; 2 clips of the next one were logged
    assert (summary.resumed, summary.captioned, dict(summary.errors)) == (2, 4, {"captioner": 1})
    assert not (work / ".caption-log.jsonl").exists()
    assert not list(work.glob(".*tmp*"))  # no temp files left behind
    seen = 0
    for p in shards:
        for m, data in _members(p):
            if m.endswith(".json") and p.name != "video-broken.tar":
                meta = json.loads(data)
                assert meta["caption"] == _expected_metadata_caption(meta, by_file)
                seen += 1
    assert seen == 8
