"""`ea-data` end to end: run, the stage sub-commands chained by hand, merge, help, exit codes."""

import json
import subprocess
import sys

import pytest

from ea_data.cli import main
from ea_data.manifest import read_jsonl
from ea_data.synthetic import make_dataset

SHARD = ["--shard-fps", "4", "--shard-max-side", "32"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_in")
    make_dataset(root, num_videos=2, num_images=1, seed=2)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 100)
    return root


@pytest.fixture(scope="module")
def ran(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_run")
    assert main(["run", str(inputs), str(out), "--scorers", "motion", "--quiet", *SHARD]) == 0
    return out


def test_run_writes_manifest_shards_and_summary(ran, capsys):
    records = read_jsonl(ran / "manifest.jsonl")
    assert {r["status"] for r in records} == {"kept", "rejected", "error"}
    assert [r["source"] for r in records if r["status"] == "error"] == ["videos/broken.mp4"]
    assert list((ran / "shards").glob("video-*.tar")) and list((ran / "shards").glob("image-*.tar"))
    summary = json.loads((ran / "summary.json").read_text())
    assert summary["videos"] == 3 and summary["errors"] == 1 and summary["images"] == 1
    assert main(["summary", str(ran / "manifest.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "videos: 3" in printed and "unreadable files: 1" in printed and "rejected:" in printed


def test_stage_commands_chain_to_the_same_manifest(inputs, ran, tmp_path):
    s, c, f, out = tmp_path / "split.jsonl", tmp_path / "scored.jsonl", tmp_path / "filtered.jsonl", tmp_path / "out"
    assert main(["split", str(inputs), str(s), "--quiet"]) == 0
    split = read_jsonl(s)
    assert all(r["motion_score"] is None for r in split)
    assert {r["status"] for r in split} <= {"pending", "rejected", "error"}
    assert main(["score", str(s), str(c), "--input-dir", str(inputs), "--scorers", "motion", "--quiet"]) == 0
    assert main(["filter", str(c), str(f), "--quiet"]) == 0
    assert main(["shard", str(f), str(out), "--input-dir", str(inputs), "--quiet", *SHARD]) == 0
    staged, whole = read_jsonl(out / "manifest.jsonl"), read_jsonl(ran / "manifest.jsonl")
    # Scores from per-clip decoding (score) equal those of the single-pass run.
    for a, b in zip(staged, whole, strict=True):
        if b["motion_score"] is None:
            assert a["motion_score"] is None
        else:
            assert a["motion_score"] == pytest.approx(b["motion_score"], rel=1e-5, abs=1e-6)
        assert {k: v for k, v in a.items() if k != "motion_score"} == {k: v for k, v in b.items()
                                                                        if k != "motion_score"}


def test_refilter_and_merge_parts(inputs, ran, tmp_path):
    loose = tmp_path / "loose.jsonl"
    assert main(["filter", str(ran / "manifest.jsonl"), str(loose), "--min-motion", "none",
                 "--max-motion", "none", "--quiet"]) == 0
    recs = read_jsonl(loose)
    assert not any(r["reject_reason"] in ("motion_low", "motion_high") for r in recs)
    assert sum(r["status"] == "kept" for r in recs) > sum(
        r["status"] == "kept" for r in read_jsonl(ran / "manifest.jsonl"))
    parts = [tmp_path / f"split-{i}.jsonl" for i in range(2)]
    for i, p in enumerate(parts):
        assert main(["split", str(inputs), str(p), "--shard", f"{i}/2", "--quiet"]) == 0
    whole = tmp_path / "split.jsonl"
    assert main(["split", str(inputs), str(whole), "--quiet"]) == 0
    assert main(["merge", str(tmp_path / "merged.jsonl"), *map(str, parts)]) == 0
    assert read_jsonl(tmp_path / "merged.jsonl") == read_jsonl(whole)
    assert all(read_jsonl(p) for p in parts)  # both parts got files
    assert main(["merge", str(tmp_path / "dup.jsonl"), str(parts[0]), str(parts[0])]) == 2


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("run", "split", "score", "filter", "shard", "merge", "motion_score", "text_area"):
        assert word in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for opt in ("--workers", "--shard I/N", "--max-text-area", "--min-motion", "--motion-backend", "--raft-weights",
                "--clip-weights", "--aesthetic-head", "--shard-fps", "--runner", "--no-split-long", "--detector"):
        assert opt in text, opt


@pytest.mark.parametrize("args, message", [
    (["run", "/no/such/dir", "OUT"], "input folder does not exist"),
    (["run", "IN", "OUT", "--shard", "2/2"], "shard must be i/n"),
    (["run", "IN", "OUT", "--shard", "half"], "--shard expects i/n"),
    (["run", "IN", "OUT", "--workers", "0"], "workers must be >= 1"),
    (["run", "IN", "OUT", "--motion-backend", "raft", "--raft-weights", "/no/raft.pth"], "is not a file"),
    (["run", "IN", "OUT", "--min-motion", "30", "--max-motion", "5"], "above max_motion"),
    (["run", "IN", "OUT", "--min-seconds", "12"], "min_seconds <= max_seconds"),
    (["run", "IN", "OUT", "--motion-backend", "raft", "--raft-weights", "BAD"], "scorer setup failed"),
    (["filter", "/no/m.jsonl", "OUT.jsonl"], "manifest file does not exist"),
    (["filter", "BAD", "OUT.jsonl"], "bad.jsonl:2: invalid JSON"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, inputs, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"clip_id": "a", "source": "s"}\n{oops\n')
    args = [str(inputs) if a == "IN" else str(tmp_path / "o") if a == "OUT" else str(bad) if a == "BAD"
            else str(tmp_path / a) if a == "OUT.jsonl" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("ea-data ")
    assert not (tmp_path / "o" / "manifest.jsonl").exists()


def test_argparse_errors_and_module_entry_point(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["run", "IN", "OUT", "--scorers", "motion,colour"])
    assert e.value.code == 2
    p = subprocess.run([sys.executable, "-m", "ea_data", "run", str(tmp_path / "missing"), str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].endswith("input folder does not exist")
