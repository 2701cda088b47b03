"""The stages of the curation pipeline (split -> score -> filter -> shard) and :func:`run`, which chains them.

Each stage can also run alone (the `ea-data split|score|filter|shard` commands): it reads and returns
manifest records. See :mod:`ea_data.curation` for the outputs, parts and resuming.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ea_core.atomic import atomic_write_json
from ea_data.curation.config import PipelineConfig
from ea_data.curation.executors import Executor, LocalExecutor, own_executor
from ea_data.curation.layout import list_inputs, output_paths, part_of, part_sources
from ea_data.curation.summary import summarize
from ea_data.curation.work import FileTask, ScoreTask, check_scorers, file_stamp, process_file, score_source
from ea_data.filters import FILTER_REASONS, FilterConfig, filter_records
from ea_data.manifest import append_jsonl, read_jsonl, sort_key, write_jsonl
from ea_data.progress import progress_bar
from ea_data.shards import write_shards

logger = logging.getLogger("ea_data.curation")


def scan_files(sources: list[tuple[str, str]], input_dir: str | os.PathLike, cfg: PipelineConfig,
               executor: Executor, log_path: Path | None = None,
               on_file_done: Callable[[dict], None] | None = None) -> tuple[list[dict], dict]:
    """Split + score `sources` (`(relative path, "video" | "image")`), resuming from `log_path`.

    Returns `(entries, stats)`: one work-log entry per source, in the order of `sources`, and
    `{"resumed": n, "processed": m}`. `on_file_done(entry)` is called after each new entry is logged.
    """
    fp = cfg.scan_fingerprint()
    done: dict[str, dict] = {}
    if log_path is not None and log_path.exists():
        for e in read_jsonl(log_path, allow_partial=True):
            done[e["source"]] = e  # the last entry of a source wins
    input_dir = Path(input_dir)
    entries: dict[str, dict] = {}
    todo = []
    for src, kind in sources:
        old = done.get(src)
        if old is not None and old.get("config") == fp and _same_stamp(input_dir / src, old):
            entries[src] = old
        else:
            todo.append(FileTask(src, kind, str(input_dir), cfg.split, cfg.score, fp))
    if log_path is not None and len(done) > len(entries):
        # Drop stale lines (other config, changed files, files no longer listed) so the log stays small.
        write_jsonl(log_path, [entries[s] for s, _ in sources if s in entries])
    with progress_bar(total=len(sources), initial=len(entries), desc="split+score", unit="file",
                      disable=not cfg.progress) as bar:
        for entry in executor.imap_unordered(process_file, todo):
            if log_path is not None:
                append_jsonl(log_path, entry)
            entries[entry["source"]] = entry
            bar.update()
            if on_file_done is not None:
                on_file_done(entry)
    stats = {"resumed": len(sources) - len(todo), "processed": len(todo)}
    return [entries[s] for s, _ in sources], stats


def _same_stamp(path: Path, entry: dict) -> bool:
    try:
        return file_stamp(path) == {"size": entry.get("size"), "mtime_ns": entry.get("mtime_ns")}
    except OSError:
        return entry.get("size") == -1  # still missing: the logged error still holds


def apply_filter_stage(records: list[dict], cfg: FilterConfig, progress: bool = True) -> list[dict]:
    """Filter stage over manifest records (with a progress bar), sorted into manifest order."""
    with progress_bar(records, desc="filter", unit="clip", disable=not progress, leave=False) as bar:
        out = filter_records(bar, cfg)
    return sorted(out, key=sort_key)


def merge_parts(output_dir: str | os.PathLike, count: int) -> Path | None:
    """Write `manifest.jsonl` from all part manifests once all `count` exist; returns it (or None)."""
    paths = [output_paths(output_dir, i, count)["part_manifest"] for i in range(count)]
    if not all(p.exists() for p in paths):
        return None
    records = [r for p in paths for r in read_jsonl(p)]
    return write_jsonl(output_paths(output_dir)["manifest"], sorted(records, key=sort_key))


def run(input_dir: str | os.PathLike, output_dir: str | os.PathLike, config: PipelineConfig | None = None,
        executor: Executor | None = None, on_file_done: Callable[[dict], None] | None = None) -> dict:
    """Split -> score -> filter -> shard every video and image under `input_dir` into `output_dir`.

    Returns the summary of this part (the whole run unless `config.num_shards > 1`); the summary
    of the merged manifest is written to `output_dir/summary.json` once all parts are done.
    `executor` maps the per-file work (default: :class:`LocalExecutor` with `config.workers`; see
    :mod:`ea_data.ray_runner` for Ray); `on_file_done(entry)` is called after each file is logged.
    """
    cfg = config or PipelineConfig()
    t0 = time.time()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    inputs = list_inputs(input_dir, exclude=[output_dir])
    paths = output_paths(output_dir, cfg.shard_index, cfg.num_shards)
    sources = part_sources(inputs, cfg.shard_index, cfg.num_shards)
    with own_executor(executor, cfg.workers) as ex:
        if isinstance(ex, LocalExecutor) and ex.workers == 1:
            check_scorers(cfg.score)  # built here once and reused for every file
        entries, stats = scan_files(sources, input_dir, cfg, ex, paths["scan_log"], on_file_done)
        records = apply_filter_stage([r for e in entries for r in e["records"]], cfg.filter, cfg.progress)
        skipped = {k: v for e in entries for k, v in (e.get("skipped") or {}).items()}
        summary = shard_stage(records, input_dir, output_dir, cfg, ex, write=cfg.write_shards,
                              extra={"ignored_files": len(inputs.ignored), "skipped_scorers": skipped})
    summary.update(files_resumed=stats["resumed"], files_processed=stats["processed"],
                   seconds=round(time.time() - t0, 3))
    return summary


def split_stage(input_dir: str | os.PathLike, config: PipelineConfig | None = None,
                executor: Executor | None = None) -> list[dict]:
    """Split stage alone: scene records (no scores) for this part's files, in manifest order.

    Clips within the length bounds are `"pending"`; scenes outside them `"rejected"`; unreadable
    files `"error"`; images `"pending"`.
    """
    cfg = config or PipelineConfig()
    cfg = replace(cfg, score=replace(cfg.score, scorers=()))
    inputs = list_inputs(input_dir)
    with own_executor(executor, cfg.workers) as ex:
        entries, _ = scan_files(part_sources(inputs, cfg.shard_index, cfg.num_shards), input_dir, cfg, ex)
    return sorted((r for e in entries for r in e["records"]), key=sort_key)


def needs_scores(record: dict) -> bool:
    """Records the score stage (re)scores: all but errors and clips the split stage rejected."""
    if record["status"] == "error":
        return False
    return record["status"] != "rejected" or record.get("reject_reason") in FILTER_REASONS


def score_stage(records: list[dict], input_dir: str | os.PathLike, config: PipelineConfig | None = None,
                executor: Executor | None = None) -> list[dict]:
    """Score stage alone: (re)score this part's records from their sources; returns them `"pending"`.

    Records of other parts (by source) are left out of the result; merge the parts afterwards.
    A clip that cannot be decoded becomes an `"error"` record.
    """
    cfg = config or PipelineConfig()
    mine = [dict(r) for r in records if part_of(r["source"], cfg.num_shards) == cfg.shard_index]
    by_source: dict[str, list[dict]] = {}
    for r in mine:
        if needs_scores(r):
            by_source.setdefault(r["source"], []).append(r)
    tasks = [ScoreTask(src, rs[0].get("type", "video"), str(input_dir), cfg.score,
                       tuple((r["start_time"], r["end_time"]) for r in rs)) for src, rs in by_source.items()]
    skipped: dict[str, str] = {}
    with own_executor(executor, cfg.workers) as ex, \
            progress_bar(total=len(tasks), desc="score", unit="file", disable=not cfg.progress) as bar:
        results = {}
        for task, res in zip(tasks, ex.imap(score_source, tasks), strict=True):
            results[task.source] = res
            bar.update()
    for src, rs in by_source.items():
        res = results[src]
        skipped.update(res["skipped"])
        for r, scores, err in zip(rs, res["scores"], res["errors"], strict=True):
            if err is not None:
                r.update(status="error", error=err, reject_reason=None)
            else:
                r.update(scores, status="pending", reject_reason=None, error=None)
    for name, reason in skipped.items():
        logger.warning("scorer %r left out: %s", name, reason)
    return sorted(mine, key=sort_key)


def shard_stage(records: list[dict], input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                config: PipelineConfig | None = None, executor: Executor | None = None, write: bool = True,
                extra: dict | None = None) -> dict:
    """Shard stage: write this part's kept records into `output_dir/shards`, then its manifest.

    Writes the part manifest (or `manifest.jsonl` when there is one part), merges `manifest.jsonl`
    once every part exists, and returns the summary of this part's records (plus `extra`).
    """
    cfg = config or PipelineConfig()
    output_dir = Path(output_dir)
    paths = output_paths(output_dir, cfg.shard_index, cfg.num_shards)
    records = sorted((r for r in records if part_of(r["source"], cfg.num_shards) == cfg.shard_index), key=sort_key)
    if write:
        with own_executor(executor, cfg.workers) as ex:
            records = write_shards(records, input_dir, output_dir, cfg.shard, prefix=paths["shard_prefix"],
                                   log_path=paths["shard_log"], ordered_map=ex.imap, progress=cfg.progress)
    write_jsonl(paths["part_manifest"], records)
    summary = {**summarize(records), **(extra or {}), "part": f"{cfg.shard_index}/{cfg.num_shards}"}
    if cfg.num_shards == 1 or merge_parts(output_dir, cfg.num_shards) is not None:
        full = {**summarize(read_jsonl(paths["manifest"])), **(extra or {})}
        atomic_write_json(paths["summary"], full, indent=1, sort_keys=True)
    return summary
