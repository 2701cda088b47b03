"""The curation pipeline: split -> score -> filter -> shard over a folder of videos and images.

    summary = run("raw/", "curated/", PipelineConfig(workers=8))

writes ``curated/manifest.jsonl`` (one :class:`ea_data.manifest.ClipRecord` per detected scene or
scene piece, kept or rejected with its reason; one ``"error"`` record per unreadable file; one record
per image), ``curated/shards/*.tar`` (WebDataset, see :mod:`ea_data.shards`) and
``curated/summary.json``.

Each video is decoded once for scene detection and scoring together
(:func:`ea_data.scoring.split_and_score`). Files are processed in parallel (a local process pool,
or Ray with :mod:`ea_data.ray_runner`), scorers are built once per worker.

Cluster use: ``shard_index / num_shards`` (``--shard i/n``) processes a deterministic part of the
input files (by a hash of each relative path, so adding files does not move the others). Each part
writes ``parts/manifest-IIIII-of-NNNNN.jsonl`` and its own shard series; when the last part finishes,
``manifest.jsonl`` is merged from all parts.

Resume: every finished file is appended to ``work/scan-IIIII-of-NNNNN.jsonl`` (fsynced) with its
unfiltered records; a rerun skips the files found there (same size, mtime and split/score config),
re-applies the filters (changing thresholds re-filters without re-scoring) and continues the shard
stage after its last completed shard. The manifest is sorted, so an interrupted and resumed run ends
with the same manifest as an uninterrupted one.

Modules: :mod:`~ea_data.curation.config` (settings), :mod:`~ea_data.curation.layout` (input files,
parts, output paths), :mod:`~ea_data.curation.work` (per-file split + score in workers),
:mod:`~ea_data.curation.executors` (local pool; Ray in :mod:`ea_data.ray_runner`),
:mod:`~ea_data.curation.stages` (the stages and :func:`run`), :mod:`~ea_data.curation.summary`.
"""

from ea_data.curation.config import InputError, PipelineConfig, ScoreConfig, SplitConfig, parse_part
from ea_data.curation.executors import Executor, LocalExecutor
from ea_data.curation.layout import Inputs, list_inputs, output_paths, part_of, select_part
from ea_data.curation.stages import (
    apply_filter_stage,
    merge_parts,
    needs_scores,
    run,
    scan_files,
    score_stage,
    shard_stage,
    split_stage,
)
from ea_data.curation.summary import format_summary, summarize
from ea_data.curation.work import FileTask, ScoreTask, process_file, score_source

__all__ = [
    "InputError", "PipelineConfig", "ScoreConfig", "SplitConfig", "parse_part",
    "Executor", "LocalExecutor",
    "Inputs", "list_inputs", "output_paths", "part_of", "select_part",
    "apply_filter_stage", "merge_parts", "needs_scores", "run", "scan_files", "score_stage", "shard_stage",
    "split_stage", "format_summary", "summarize",
    "FileTask", "ScoreTask", "process_file", "score_source",
]
