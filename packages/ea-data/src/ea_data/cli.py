"""`ea-data`: the curation pipeline from the command line.

    ea-data run INPUT_DIR OUTPUT_DIR [--workers 8] [--shard 0/4] ...   # split -> score -> filter -> shard
    ea-data split INPUT_DIR scenes.jsonl                                # each stage on its own
    ea-data score scenes.jsonl scored.jsonl --input-dir INPUT_DIR
    ea-data filter scored.jsonl filtered.jsonl --max-text-area 0.02
    ea-data shard filtered.jsonl OUTPUT_DIR --input-dir INPUT_DIR
    ea-data merge all.jsonl part-0.jsonl part-1.jsonl                   # join --shard i/n outputs
    ea-data summary OUTPUT_DIR/manifest.jsonl

Exit status: 0 on success (unreadable input files are recorded in the manifest, not fatal),
2 for bad arguments or inputs (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ea_data.curation import (
    InputError,
    PipelineConfig,
    ScoreConfig,
    SplitConfig,
    apply_filter_stage,
    format_summary,
    parse_part,
    run,
    score_stage,
    shard_stage,
    split_stage,
    summarize,
)
from ea_data.filters import FilterConfig
from ea_data.manifest import ManifestError, read_jsonl, sort_key, write_jsonl
from ea_data.ray_runner import RayExecutor
from ea_data.scenes import DEFAULT_DETECTOR, DETECTORS
from ea_data.shards import ShardConfig

EPILOG = """\
Scores and units: motion_score = mean optical-flow magnitude between frames sampled at --sample-fps
(pixels per sampled step at a 256 px short side); text_area = fraction of the frame covered by OCR text
boxes (0..1); aesthetic_score = improved-aesthetic-predictor on CLIP (about 1..10). A scorer whose weights
are not given (aesthetic without --clip-weights/--aesthetic-head, raft without --raft-weights) is reported
and left out; its filter is then not applied.

Manifest: OUTPUT_DIR/manifest.jsonl, one JSON record per clip / image / unreadable file with source,
start/end frame and time, fps, size, scores, status (kept|rejected|error), reject_reason, error, caption,
shard and key. Shards: OUTPUT_DIR/shards/{video,image}-NNNNNN.tar (WebDataset: <key>.mp4|jpg|png +
<key>.json). A rerun of `run` resumes from OUTPUT_DIR/work/ and ends with the same manifest.
"""


class _Fail(Exception):
    """A user error: printed as one line, exit status 2."""


def _optional_float(text: str) -> float | None:
    if text.lower() in ("none", "off", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (e.g. 512x320), got {text!r}") from None
    return w, h


def _scorer_list(text: str) -> tuple[str, ...]:
    if text.lower() in ("none", ""):
        return ()
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [n for n in names if n not in ("motion", "text", "aesthetic")]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown scorer(s) {bad}; choose from motion,text,aesthetic")
    return names


# ------------------------------------------------------------------------------------------ options


def _add_exec(p: argparse.ArgumentParser, workers: bool = True, part: bool = True) -> None:
    g = p.add_argument_group("execution")
    if workers:
        g.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
        g.add_argument("--runner", choices=("local", "ray"), default="local",
                       help="local process pool, or a Ray cluster (needs ray: pip install 'ea-data[ray]')")
        g.add_argument("--ray-address", default=None,
                       help="Ray cluster address (default: connect to RAY_ADDRESS or start a local Ray)")
    if part:
        g.add_argument("--shard", default="0/1", metavar="I/N",
                       help="process part I of N of the inputs (stable hash of each file path), for spreading "
                            "the work over a cluster scheduler; default 0/1 = everything")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_split(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("split (scene detection and clip length)")
    g.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                   help="scene detector (default blockmatch: hard cuts, fades and dissolves; see "
                        "packages/ea-data/README.md for the measured table)")
    g.add_argument("--threshold", type=float, default=None,
                   help="detector threshold (default: 0.4 blockmatch, 3.0 adaptive (also for adaptive+histogram), "
                        "27 content, 0.03 histogram)")
    g.add_argument("--min-scene-len", type=int, default=15, help="minimum frames between cuts (default 15)")
    g.add_argument("--min-seconds", type=float, default=3.0, help="shortest clip kept, seconds (default 3)")
    g.add_argument("--max-seconds", type=float, default=10.0, help="longest clip, seconds (default 10)")
    g.add_argument("--split-long", action=argparse.BooleanOptionalAction, default=True,
                   help="cut scenes longer than --max-seconds into pieces (default) or reject them")


def _add_score(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("score")
    g.add_argument("--scorers", type=_scorer_list, default=("motion", "text", "aesthetic"),
                   help="comma-separated scorers to run: motion,text,aesthetic (default all; 'none' for none)")
    g.add_argument("--sample-fps", type=float, default=2.0, help="frames per second sampled for scoring (default 2)")
    g.add_argument("--motion-backend", choices=("opencv", "raft"), default="opencv",
                   help="optical flow: opencv Farneback (default, no weights) or RAFT (needs --raft-weights)")
    g.add_argument("--raft-weights", default=None, help="local RAFT state-dict file (.pth / .safetensors)")
    g.add_argument("--raft-model", choices=("small", "large"), default="small", help="RAFT variant")
    g.add_argument("--clip-model", default="ViT-L-14", help="open_clip model name (default ViT-L-14)")
    g.add_argument("--clip-weights", default=None, help="open_clip checkpoint path or pretrained tag")
    g.add_argument("--aesthetic-head", default=None, help="improved-aesthetic-predictor head weights file")
    g.add_argument("--device", default="cpu", help="torch device for RAFT / CLIP (default cpu)")


def _add_filter(p: argparse.ArgumentParser) -> None:
    d = FilterConfig()
    g = p.add_argument_group("filter (a bound set to 'none' is not applied)")
    g.add_argument("--max-text-area", type=_optional_float, default=d.max_text_area,
                   help=f"reject clips whose text covers more than this fraction of the frame (default "
                        f"{d.max_text_area})")
    g.add_argument("--min-motion", type=_optional_float, default=d.min_motion,
                   help=f"reject clips with motion_score below this (default {d.min_motion})")
    g.add_argument("--max-motion", type=_optional_float, default=d.max_motion,
                   help=f"reject clips with motion_score above this (default {d.max_motion})")
    g.add_argument("--min-aesthetic", type=_optional_float, default=d.min_aesthetic,
                   help=f"reject clips with aesthetic_score below this (default {d.min_aesthetic})")


def _add_shard(p: argparse.ArgumentParser, switch: bool = False) -> None:
    g = p.add_argument_group("shard (WebDataset tar output)")
    if switch:
        g.add_argument("--no-shards", action="store_true", help="write the manifest only, no tar shards")
    g.add_argument("--shard-fps", type=_optional_float, default=8.0,
                   help="frame rate of written clips, never above the source's ('none' = source rate; default 8)")
    g.add_argument("--shard-max-side", type=int, default=512,
                   help="resize written frames so the longer side is at most this (default 512)")
    g.add_argument("--shard-resolution", type=_resolution, default=None, metavar="WxH",
                   help="resize + centre-crop written frames to exactly WxH (overrides --shard-max-side)")
    g.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    g.add_argument("--shard-max-bytes", type=float, default=1e9, help="bytes per shard (default 1e9)")
    g.add_argument("--shard-crf", type=int, default=18, help="H.264 quality of written clips (default 18)")


# ------------------------------------------------------------------------------------------ configs


def _config(a: argparse.Namespace):
    kw = {}
    if hasattr(a, "detector"):
        kw["split"] = SplitConfig(detector=a.detector, threshold=a.threshold, min_scene_len=a.min_scene_len,
                                  min_seconds=a.min_seconds, max_seconds=a.max_seconds, split_long=a.split_long)
    if hasattr(a, "scorers"):
        kw["score"] = ScoreConfig(scorers=a.scorers, sample_fps=a.sample_fps, motion_backend=a.motion_backend,
                                  raft_weights=a.raft_weights, raft_model=a.raft_model, clip_model=a.clip_model,
                                  clip_weights=a.clip_weights, aesthetic_head=a.aesthetic_head, device=a.device)
    if hasattr(a, "max_text_area"):
        kw["filter"] = _filter_config(a)
    if hasattr(a, "shard_fps"):
        try:
            kw["shard"] = ShardConfig(fps=a.shard_fps, max_side=a.shard_max_side, size=a.shard_resolution,
                                      crf=a.shard_crf, max_count=a.shard_size, max_bytes=int(a.shard_max_bytes))
        except ValueError as e:
            raise _Fail(str(e)) from None
        kw["write_shards"] = not getattr(a, "no_shards", False)
    if hasattr(a, "shard"):
        kw["shard_index"], kw["num_shards"] = parse_part(a.shard)
    if hasattr(a, "workers"):
        kw["workers"] = a.workers
    return PipelineConfig(progress=not getattr(a, "quiet", False), **kw)


def _filter_config(a: argparse.Namespace) -> FilterConfig:
    try:
        return FilterConfig(max_text_area=a.max_text_area, min_motion=a.min_motion, max_motion=a.max_motion,
                            min_aesthetic=a.min_aesthetic)
    except ValueError as e:
        raise _Fail(str(e)) from None


@contextmanager
def _executor(a: argparse.Namespace) -> Iterator[RayExecutor | None]:
    """The executor `--runner` asks for (None = the pipeline's local pool of `--workers`)."""
    if getattr(a, "runner", "local") != "ray":
        yield None
        return
    with RayExecutor(address=a.ray_address) as ex:
        yield ex


def _read_manifest(path: str) -> list[dict]:
    if not Path(path).is_file():
        raise _Fail(f"{path}: manifest file does not exist")
    return read_jsonl(path)


def _input_dir(path: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise _Fail(f"{path}: input folder does not exist")
    return p


# ------------------------------------------------------------------------------------------ commands


def _cmd_run(a):
    _input_dir(a.input_dir)
    cfg = _config(a)
    with _executor(a) as ex:
        summary = run(a.input_dir, a.output_dir, cfg, executor=ex)
    print(format_summary(summary))
    print(f"manifest: {Path(a.output_dir) / 'manifest.jsonl'}" if cfg.num_shards == 1 else
          f"part {cfg.shard_index}/{cfg.num_shards} written under {a.output_dir}/parts")


def _write_manifest(path, records) -> None:
    """Write a stage's records and print its summary."""

    write_jsonl(path, records)
    print(format_summary(summarize(records)))
    print(f"wrote {len(records)} records to {path}")


def _cmd_split(a):
    _input_dir(a.input_dir)
    with _executor(a) as ex:
        records = split_stage(a.input_dir, _config(a), executor=ex)
    _write_manifest(a.output, records)


def _cmd_score(a):
    _input_dir(a.input_dir)
    records = _read_manifest(a.manifest)
    with _executor(a) as ex:
        out = score_stage(records, a.input_dir, _config(a), executor=ex)
    _write_manifest(a.output, out)


def _cmd_filter(a):
    records = apply_filter_stage(_read_manifest(a.manifest), _filter_config(a), progress=not a.quiet)
    _write_manifest(a.output, records)


def _cmd_shard(a):
    _input_dir(a.input_dir)
    records = _read_manifest(a.manifest)
    cfg = _config(a)
    with _executor(a) as ex:
        summary = shard_stage(records, a.input_dir, a.output_dir, cfg, executor=ex)
    print(format_summary(summary))


def _cmd_merge(a):
    records = [r for p in a.parts for r in _read_manifest(p)]
    ids = [r["clip_id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise _Fail(f"the parts overlap: clip ids {dup} appear more than once")
    write_jsonl(a.output, sorted(records, key=sort_key))
    print(f"merged {len(a.parts)} manifests ({len(records)} records) into {a.output}")


def _cmd_summary(a):
    print(format_summary(summarize(_read_manifest(a.manifest))))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ea-data", description=__doc__.split("\n\n")[0].strip() + (
        " Turns a folder of raw videos (and images) into WebDataset training shards: scene split, "
        "motion / text / aesthetic scores, filters, shards."), epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="split -> score -> filter -> shard a folder (resumable)",
                       description="Run every stage over INPUT_DIR and write OUTPUT_DIR/manifest.jsonl, "
                                   "OUTPUT_DIR/shards/ and OUTPUT_DIR/summary.json. Rerunning resumes.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("input_dir", help="folder of videos/images (searched recursively)")
    r.add_argument("output_dir", help="output folder")
    for add in (_add_split, _add_score, _add_filter):
        add(r)
    _add_shard(r, switch=True)
    _add_exec(r)
    r.set_defaults(func=_cmd_run)

    s = sub.add_parser("split", help="scene-split a folder into a manifest of clips (no scores)")
    s.add_argument("input_dir")
    s.add_argument("output", help="manifest to write (.jsonl)")
    _add_split(s)
    _add_exec(s)
    s.set_defaults(func=_cmd_split)

    c = sub.add_parser("score", help="(re)score the clips of a manifest")
    c.add_argument("manifest")
    c.add_argument("output", help="scored manifest to write (.jsonl); records come out 'pending' (run filter)")
    c.add_argument("--input-dir", required=True, help="folder the manifest's `source` paths are relative to")
    _add_score(c)
    _add_exec(c)
    c.set_defaults(func=_cmd_score)

    f = sub.add_parser("filter", help="re-filter a scored manifest with new thresholds (no re-scoring)")
    f.add_argument("manifest")
    f.add_argument("output")
    _add_filter(f)
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_cmd_filter)

    h = sub.add_parser("shard", help="write the kept records of a manifest into WebDataset shards",
                       description="Writes OUTPUT_DIR/shards/*.tar and OUTPUT_DIR/manifest.jsonl (with shard and "
                                   "key); resumes after the last completed shard.")
    h.add_argument("manifest")
    h.add_argument("output_dir")
    h.add_argument("--input-dir", required=True, help="folder the manifest's `source` paths are relative to")
    _add_shard(h)
    _add_exec(h)
    h.set_defaults(func=_cmd_shard)

    m = sub.add_parser("merge", help="merge manifests of --shard i/n parts into one sorted manifest")
    m.add_argument("output")
    m.add_argument("parts", nargs="+")
    m.set_defaults(func=_cmd_merge)

    y = sub.add_parser("summary", help="print the summary of a manifest")
    y.add_argument("manifest")
    y.set_defaults(func=_cmd_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)  # exits with 2 and a usage line on bad arguments
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        a.func(a)
    except (_Fail, InputError, ManifestError) as e:
        msg = " ".join(str(e).split())  # one line, however long the underlying library's message
        print(f"ea-data {a.command}: error: {msg[:500]}", file=sys.stderr)
        return 2
    return 0
