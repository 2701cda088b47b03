"""Run summaries: counts from manifest records, and their human-readable form."""

from __future__ import annotations

from collections import Counter


def summarize(records: list[dict]) -> dict:
    """Counts from manifest records: files, errors, clips, kept hours, rejections per reason."""
    videos = {r["source"] for r in records if r.get("type", "video") == "video"}
    images = {r["source"] for r in records if r.get("type") == "image"}
    errors = sorted({r["source"] for r in records if r["status"] == "error" and r.get("end_frame", 0) == 0})
    clips = [r for r in records if r.get("type", "video") == "video" and r["source"] not in errors]

    def hours(rs):
        return round(sum(max(0.0, r["end_time"] - r["start_time"]) for r in rs) / 3600, 6)

    kept = [r for r in clips if r["status"] == "kept"]
    rejected = Counter(r["reject_reason"] for r in records if r["status"] == "rejected")
    return {
        "videos": len(videos), "images": len(images), "errors": len(errors), "error_files": errors,
        "clips": len(clips), "clips_kept": len(kept), "clip_errors": sum(r["status"] == "error" for r in clips),
        "hours_input": hours(clips), "hours_kept": hours(kept),
        "images_kept": sum(r["status"] == "kept" for r in records if r.get("type") == "image"),
        "rejected": dict(sorted(rejected.items())),
        "shards": len({r["shard"] for r in records if r.get("shard")}),
    }


def format_summary(s: dict) -> str:
    """Human-readable summary lines."""
    lines = [
        f"videos: {s['videos']}  images: {s['images']}  unreadable files: {s['errors']}"
        + (f"  ignored (not media): {s['ignored_files']}" if s.get("ignored_files") else ""),
        f"clips: {s['clips']} ({s['hours_input'] * 60:.2f} min), kept {s['clips_kept']} "
        f"({s['hours_kept']:.4f} h = {s['hours_kept'] * 60:.2f} min); images kept {s['images_kept']}",
        "rejected: " + (", ".join(f"{k} {v}" for k, v in s["rejected"].items()) or "none"),
    ]
    if s.get("shards"):
        lines.append(f"shards written: {s['shards']}")
    if s.get("error_files"):
        lines.append("unreadable: " + ", ".join(s["error_files"][:10]) + (" ..." if len(s["error_files"]) > 10
                                                                         else ""))
    for name, reason in (s.get("skipped_scorers") or {}).items():
        lines.append(f"scorer {name!r} left out: {reason}")
    if "files_resumed" in s:
        lines.append(f"files processed now: {s['files_processed']}, taken from the work log: {s['files_resumed']}")
    return "\n".join(lines)
