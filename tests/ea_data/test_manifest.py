"""Manifest jsonl helpers: round trips, atomic writes, crash-tolerant appends, clear errors."""

import json

import pytest

from ea_data.manifest import (
    RECORD_FIELDS,
    ClipRecord,
    ManifestError,
    append_jsonl,
    make_clip_id,
    new_record,
    read_jsonl,
    write_jsonl,
)


def test_roundtrip_and_schema(tmp_path):
    recs = [new_record("a/v.mp4", start_frame=0, end_frame=40, start_time=0.0, end_time=5.0, fps=8.0,
                       motion_score=3.5, status="kept"),
            new_record("a/v.mp4", start_frame=40, end_frame=50, status="rejected", reject_reason="too_short"),
            {"clip_id": "x", "source": "bad.mp4", "status": "error", "error": "unreadable", "caption": "é"}]
    p = write_jsonl(tmp_path / "m.jsonl", recs)
    assert read_jsonl(p) == recs
    # One JSON object per line, nothing else.
    lines = p.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["caption"] == "é"
    assert set(recs[0]) == set(RECORD_FIELDS)
    r = ClipRecord.from_dict(recs[0])
    assert r.duration == 5.0 and r.caption == "" and r.shard is None
    assert not list(tmp_path.glob(".*tmp*")), "temp file left behind"


def test_clip_ids_deterministic_and_distinct():
    a = make_clip_id("x/clip.v1.mp4", 0, 40)
    assert a == make_clip_id("x/clip.v1.mp4", 0, 40)
    assert "." not in a and "/" not in a
    assert len({a, make_clip_id("y/clip.v1.mp4", 0, 40), make_clip_id("x/clip.v1.mp4", 40, 80)}) == 3


def test_bad_json_names_file_and_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n{"b": \n{"c": 3}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: invalid JSON"):
        read_jsonl(p)
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: expected a JSON object"):
        read_jsonl(p)
    with pytest.raises(ManifestError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_append_tolerates_truncated_tail(tmp_path):
    p = tmp_path / "log.jsonl"
    append_jsonl(p, {"i": 0})
    append_jsonl(p, {"i": 1})
    # Simulate a writer killed mid-line.
    with open(p, "ab") as f:
        f.write(b'{"i": 2, "recs": [1, 2')
    with pytest.raises(ManifestError, match=":3: invalid JSON"):
        read_jsonl(p)
    assert read_jsonl(p, allow_partial=True) == [{"i": 0}, {"i": 1}]
    # A bad line that is not the unterminated tail is still an error.
    append_jsonl(p, {"i": 3})
    assert read_jsonl(p) == [{"i": 0}, {"i": 1}, {"i": 3}]
    assert p.read_bytes().endswith(b"\n")


def test_record_validation(tmp_path):
    with pytest.raises(ManifestError, match="status must be one of"):
        ClipRecord.from_dict({"clip_id": "c", "source": "s", "status": "maybe", "end_frame": 2})
    with pytest.raises(ManifestError, match="needs a reject_reason"):
        ClipRecord.from_dict({"clip_id": "c", "source": "s", "status": "rejected", "end_frame": 2})
    with pytest.raises(ManifestError, match="lacks"):
        ClipRecord.from_dict({"source": "s"})
    with pytest.raises(ManifestError, match="cannot be written as JSON"):
        write_jsonl(tmp_path / "never.jsonl", [{"clip_id": "c", "x": float("nan")}])
    assert not list(tmp_path.iterdir())
