"""A captioner that reads captions from the source's metadata instead of looking at pixels.

Used for data that comes with captions, such as the generated demo data (``ea_data.synthetic``),
whose ``metadata.jsonl`` has one line per file:

    {"file": "videos/video_000.mp4", "type": "video", "caption": "...",
     "scenes": [{"start_time": 0.0, "end_time": 4.5, "caption": "A video in which ..."}, ...]}
    {"file": "images/image_000.png", "type": "image", "caption": "An image in which ..."}

A video clip gets the caption of the scene that overlaps its time range most (ties go to the earlier
scene; a file without scenes gives its file-level caption); an image gets the caption of its path.
Files are matched by path relative to the metadata file's folder, by absolute path, or by file name
when that is unique.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ea_captions.captioner import CaptionResult, Clip
from ea_data.manifest import read_jsonl


def best_scene(scenes: Sequence[dict], start_time: float, end_time: float) -> dict | None:
    """The scene (dict with `start_time`, `end_time` in seconds) overlapping `[start, end)` the most.

    A zero-length range picks the scene that contains `start_time`. None when nothing overlaps.
    """
    best, best_overlap = None, 0.0
    for s in scenes:
        overlap = min(end_time, s["end_time"]) - max(start_time, s["start_time"])
        if overlap > best_overlap + 1e-9:
            best, best_overlap = s, overlap
    if best is None and end_time <= start_time:
        best = next((s for s in scenes if s["start_time"] <= start_time < s["end_time"]), None)
    return best


class MetadataCaptioner:
    """Captions from a metadata jsonl (see the module docstring). Does not decode frames."""

    needs_frames = False

    def __init__(self, metadata_path: str | os.PathLike):
        self.path = Path(metadata_path)
        self.name = f"metadata:{self.path}"
        root = self.path.parent.resolve()
        self._by_path: dict[str, dict] = {}
        by_name: dict[str, list[dict]] = {}
        for i, rec in enumerate(read_jsonl(self.path), 1):
            if "file" not in rec:
                raise ValueError(f"{self.path}:{i}: metadata record has no 'file' field")
            rel = str(rec["file"])
            self._by_path[rel] = rec
            self._by_path[str((root / rel).resolve())] = rec
            by_name.setdefault(Path(rel).name, []).append(rec)
        self._by_name = {k: v[0] for k, v in by_name.items() if len(v) == 1}

    def lookup(self, source: str) -> dict | None:
        """The metadata record of `source` (relative, absolute, or a unique file name), or None."""
        if source in self._by_path:
            return self._by_path[source]
        resolved = str(Path(source).resolve())
        if resolved in self._by_path:
            return self._by_path[resolved]
        return self._by_name.get(Path(source).name)

    def caption_one(self, clip: Clip) -> CaptionResult:
        rec = self.lookup(clip.source)
        if rec is None:
            return CaptionResult(clip.clip_id, error=f"no metadata for {clip.source!r} in {self.path}")
        scenes = rec.get("scenes") or []
        if clip.is_image or rec.get("type") == "image" or not scenes:
            text = rec.get("caption") or ""
        else:
            scene = best_scene(scenes, clip.start_time, clip.end_time)
            if scene is None:
                return CaptionResult(clip.clip_id, error=f"no scene of {rec['file']} overlaps "
                                                         f"[{clip.start_time:.3f}, {clip.end_time:.3f}) s")
            text = scene.get("caption") or ""
        if not text:
            return CaptionResult(clip.clip_id, error=f"metadata for {rec['file']} has an empty caption")
        return CaptionResult(clip.clip_id, text)

    def caption(self, clips: Sequence[Clip]) -> list[CaptionResult]:
        return [self.caption_one(c) for c in clips]
