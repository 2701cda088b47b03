"""Where a curation run reads and writes: the input files, their split into parts, the output paths."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ea_data.curation.config import InputError, check_part
from ea_vae.media import media_kind


@dataclass
class Inputs:
    """Files under an input folder, as sorted posix paths relative to it."""

    videos: list[str]
    images: list[str]
    ignored: list[str]


def list_inputs(input_dir: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> Inputs:
    """Videos and images under `input_dir` (recursive, by extension; hidden files and `exclude` skipped).

    A file is classified by its extension only: a text file named `.mp4` is a video input that will
    fail to decode and be recorded as an error.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"{root}: input folder does not exist")
    skip = {Path(e).resolve() for e in exclude}
    out = Inputs([], [], [])
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (d / n).resolve() not in skip)
        for name in filenames:
            if name.startswith("."):
                continue
            rel = (d / name).relative_to(root).as_posix()
            kind = media_kind(name)
            {"video": out.videos, "image": out.images, None: out.ignored}[kind].append(rel)
    for lst in (out.videos, out.images, out.ignored):
        lst.sort()
    return out


def part_of(source: str, count: int) -> int:
    """The part (0..count-1) a relative path belongs to: a stable hash, independent of other files."""
    return int.from_bytes(hashlib.sha1(source.encode("utf-8")).digest()[:8], "big") % count


def select_part(sources: Iterable[str], index: int, count: int) -> list[str]:
    """The sources of part `index` of `count` (every source is in exactly one part)."""
    check_part(index, count)
    return [s for s in sources if part_of(s, count) == index]


def part_sources(inputs: Inputs, index: int, count: int) -> list[tuple[str, str]]:
    """`(relative path, "video" | "image")` of part `index` of `count`, sorted by path."""
    sources = sorted([(s, "video") for s in inputs.videos] + [(s, "image") for s in inputs.images])
    return [(s, k) for s, k in sources if part_of(s, count) == index]


def part_name(index: int, count: int) -> str:
    return f"{index:05d}-of-{count:05d}"


def output_paths(output_dir: str | os.PathLike, index: int = 0, count: int = 1) -> dict[str, Path]:
    """The files part `index` of `count` writes under `output_dir` (manifests, work logs, summary)."""
    out = Path(output_dir)
    p = part_name(index, count)
    return {
        "manifest": out / "manifest.jsonl",
        "part_manifest": out / "manifest.jsonl" if count == 1 else out / "parts" / f"manifest-{p}.jsonl",
        "scan_log": out / "work" / f"scan-{p}.jsonl",
        "shard_log": out / "work" / f"shards-{p}.jsonl",
        "summary": out / "summary.json",
        "shard_prefix": "" if count == 1 else f"p{index:05d}-",
    }
