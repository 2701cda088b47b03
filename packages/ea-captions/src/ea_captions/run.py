"""Fill captions over a whole manifest or a set of WebDataset shards: batched, resumable, atomic.

:func:`caption_manifest` fills the `caption` field of the kept records of an ``ea_data`` manifest;
:func:`caption_shards` rewrites the ``caption`` field in the json member of each sample of WebDataset
tar shards. Both

- keep captions that are already there (unless `overwrite`), so a finished data set is never redone;
- append each finished caption to an append-only work log (fsynced), so a killed run continues where
  it stopped when started again; the log is removed once the output is complete;
- write outputs atomically (:mod:`ea_core.atomic`: a temp file in the same folder, then `os.replace`);
- record per-clip problems without stopping: an unreadable clip or a rejected caption leaves
  `caption` empty and sets `caption_error` (``"unreadable: ..."``, ``"repetition: ..."``, ...);
- set `caption_model` to the captioner's name on every clip they caption.

Decoding of the next batch overlaps generation of the current one (one background thread).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ea_captions.captioner import Captioner, CaptionResult, Clip
from ea_captions.postprocess import PostprocessConfig, clean_caption
from ea_captions.sampling import FrameSampling, load_clip
from ea_core.atomic import atomic_open
from ea_data.manifest import append_jsonl, read_jsonl, write_jsonl
from ea_data.progress import progress_bar
from ea_vae.media import ext_kind, media_member, read_image, split_sample_name

CAPTION_FIELDS = ("caption", "caption_error", "caption_model")


logger = logging.getLogger(__name__)

@dataclass
class RunSummary:
    """What a run did. `errors` counts clips by error tag (the part of `caption_error` before ':');
    `skipped` names the shard samples left as they were because their json member is unreadable."""

    total: int = 0
    already_captioned: int = 0
    resumed: int = 0
    captioned: int = 0
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def format(self) -> str:
        failed = sum(self.errors.values())
        lines = [f"clips to caption: {self.total} ({self.already_captioned} already captioned, "
                 f"{self.resumed} taken from the work log of an interrupted run)",
                 f"captioned now: {self.captioned}, failed: {failed}, time: {self.seconds:.1f} s"
                 + (f" ({(self.captioned + failed) / self.seconds:.2f} clips/s)" if self.seconds > 0 else "")]
        lines += [f"  {tag}: {n}" for tag, n in self.errors.most_common()]
        lines += [f"  skipped {s}" for s in self.skipped[:20]]
        lines += [f"  ... and {len(self.skipped) - 20} more skipped"] if len(self.skipped) > 20 else []
        lines += [f"wrote {p}" for p in self.outputs]
        return "\n".join(lines)


@dataclass
class Job:
    """One clip to caption: `load()` returns the :class:`Clip` (frames decoded if the captioner needs them)."""

    clip_id: str
    load: Callable[[bool], Clip]


def _error_tag(message: str) -> str:
    return message.split(":", 1)[0]


def _caption_batch(jobs: Sequence[Job], clips: Sequence[Clip | str], captioner: Captioner,
                   post: PostprocessConfig, state: dict) -> list[dict]:
    """Caption one batch; `clips[i]` is the loaded clip or the load error message. Returns field dicts."""
    fields: list[dict | None] = [None] * len(jobs)
    ok = [i for i, c in enumerate(clips) if isinstance(c, Clip)]
    for i, c in enumerate(clips):
        if not isinstance(c, Clip):
            fields[i] = {"caption": "", "caption_error": f"unreadable: {c}", "caption_model": captioner.name}
    results: dict[int, CaptionResult] = {}
    if ok:
        try:
            for i, r in zip(ok, captioner.caption([clips[i] for i in ok]), strict=True):
                results[i] = r
        except Exception as batch_error:  # isolate the clip that breaks the batch
            for i in ok:
                try:
                    results[i] = captioner.caption([clips[i]])[0]
                except Exception as e:
                    results[i] = CaptionResult(jobs[i].clip_id, error=f"{type(e).__name__}: {e}")
            if not state["any_ok"] and all(results[i].error for i in ok):
                # Nothing has ever worked: a configuration problem (wrong model, bad prompt), not a bad clip.
                raise batch_error
    for i, r in results.items():
        if r.error:
            fields[i] = {"caption": "", "caption_error": f"captioner: {r.error}", "caption_model": captioner.name}
            continue
        cleaned = clean_caption(r.text, r.finished, post)
        fields[i] = {"caption": cleaned.caption, "caption_error": cleaned.reason, "caption_model": captioner.name}
        state["any_ok"] = True
    return fields


def _run_jobs(jobs: Sequence[Job], captioner: Captioner, batch_size: int, post: PostprocessConfig,
              progress: bool, desc: str) -> Iterator[tuple[list[Job], list[dict]]]:
    """Yield `(batch_jobs, batch_fields)`; loading of batch k+1 runs while batch k is captioned."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    needs_frames = getattr(captioner, "needs_frames", True)

    def load(batch: Sequence[Job]) -> list[Clip | str]:
        out: list[Clip | str] = []
        for job in batch:
            try:
                out.append(job.load(needs_frames))
            except Exception as e:  # VideoReadError, OSError, ValueError...: recorded, the run goes on
                out.append(f"{type(e).__name__}: {e}")
        return out

    batches = [list(jobs[i:i + batch_size]) for i in range(0, len(jobs), batch_size)]
    state = {"any_ok": False}
    with ThreadPoolExecutor(max_workers=1) as pool, progress_bar(total=len(jobs), desc=desc, unit="clip",
                                                          disable=not progress) as bar:
        future = pool.submit(load, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            clips = future.result()
            future = pool.submit(load, batches[k + 1]) if k + 1 < len(batches) else None
            fields = _caption_batch(batch, clips, captioner, post, state)
            bar.update(len(batch))
            bar.set_postfix(failed=sum(1 for f in fields if f["caption_error"]))
            yield batch, fields


def _needs_caption(rec: dict, overwrite: bool, retry_errors: bool) -> bool:
    if overwrite:
        return True
    if rec.get("caption"):
        return False
    return retry_errors or not rec.get("caption_error")


# ---------------------------------------------------------------------------------------- manifests


def caption_manifest(manifest: str | os.PathLike, captioner: Captioner, output: str | os.PathLike | None = None,
                     root: str | os.PathLike | None = None, sampling: FrameSampling | None = None,
                     batch_size: int = 8, postprocess: PostprocessConfig | None = None, overwrite: bool = False,
                     retry_errors: bool = False, log_path: str | os.PathLike | None = None,
                     save_every: int = 50, progress: bool = True) -> RunSummary:
    """Caption the kept records of `manifest` and write it to `output` (default: in place).

    Sources are resolved against `root` (default: the manifest's folder). Records that are not
    ``"kept"`` are copied unchanged. The work log (default ``<output>.caption-log.jsonl``) makes the run
    resumable; the manifest is also rewritten every `save_every` batches (0: only at the end).
    """
    t0 = time.perf_counter()
    manifest = Path(manifest)
    output = Path(output) if output is not None else manifest
    root = Path(root) if root is not None else manifest.parent
    log = Path(log_path) if log_path is not None else output.with_name(output.name + ".caption-log.jsonl")
    sampling = sampling or FrameSampling()
    post = postprocess or PostprocessConfig()
    records = read_jsonl(manifest)
    by_id = {r["clip_id"]: r for r in records if "clip_id" in r}
    if len(by_id) != len(records):
        raise ValueError(f"{manifest}: every record needs a unique clip_id")

    summary = RunSummary()
    done: set[str] = set()
    if log.exists():
        for entry in read_jsonl(log, allow_partial=True):
            rec = by_id.get(entry.get("clip_id"))
            if rec is not None:
                rec.update({k: entry.get(k) for k in CAPTION_FIELDS})
                done.add(rec["clip_id"])
        summary.resumed = len(done)

    kept = [r for r in records if r.get("status") == "kept"]
    summary.total = len(kept)
    pending = [r for r in kept if r["clip_id"] not in done and _needs_caption(r, overwrite, retry_errors)]
    summary.already_captioned = summary.total - len(pending) - summary.resumed

    def make_job(rec: dict) -> Job:
        path = root / rec["source"]
        is_image = rec.get("type") == "image"

        def load(needs_frames: bool) -> Clip:
            start, end = float(rec.get("start_time") or 0.0), rec.get("end_time")
            if not needs_frames:
                return Clip(rec["clip_id"], None, is_image=is_image, source=str(path), start_time=start,
                            end_time=float(end or 0.0))
            clip = load_clip(rec["clip_id"], path, start, float(end) if end and not is_image else None,
                             sampling, is_image=is_image)
            clip.source = str(path)
            return clip

        return Job(rec["clip_id"], load)

    for k, (batch, fields) in enumerate(_run_jobs([make_job(r) for r in pending], captioner, batch_size, post,
                                                   progress, f"captioning {manifest.name}")):
        for job, f in zip(batch, fields, strict=True):
            by_id[job.clip_id].update(f)
            append_jsonl(log, {"clip_id": job.clip_id, **f})
            if f["caption_error"]:
                summary.errors[_error_tag(f["caption_error"])] += 1
            else:
                summary.captioned += 1
        if save_every and (k + 1) % save_every == 0:
            write_jsonl(output, records)
    write_jsonl(output, records)
    log.unlink(missing_ok=True)
    summary.outputs.append(str(output))
    summary.seconds = time.perf_counter() - t0
    return summary


# ---------------------------------------------------------------------------------------- shards

def _read_shard(path: Path) -> tuple[list[tuple[tarfile.TarInfo, bytes]], dict[str, dict[str, int]]]:
    """All members of a tar shard (in order) and, per sample key, the member index of each extension."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise OSError(f"{path}: not a readable tar shard ({e})") from None
    samples: dict[str, dict[str, int]] = {}
    for i, (m, _) in enumerate(members):
        if m.isfile():
            key, ext = split_sample_name(m.name)
            samples.setdefault(key, {})[ext] = i
    return members, samples


def _write_shard(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    """Write a tar atomically (:func:`ea_core.atomic.atomic_open`)."""
    with atomic_open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def _shard_job(key: str, shard: Path, meta: dict, media_ext: str, media: bytes, sampling: FrameSampling) -> Job:
    is_image = ext_kind(media_ext) == "image"
    clip_id = key

    def load(needs_frames: bool) -> Clip:
        source = str(meta.get("source") or f"{shard}:{key}")
        start, end = float(meta.get("start_time") or 0.0), float(meta.get("end_time") or 0.0)
        if not needs_frames:
            return Clip(clip_id, None, is_image=is_image, source=source, start_time=start, end_time=end)
        if is_image:
            clip = Clip(clip_id, read_image(media, f"{shard}:{key}")[None], is_image=True)
        else:
            # PyAV wants a file; the clip is small (a shard sample), so a temp file is cheap.
            with tempfile.TemporaryDirectory(prefix="ea_captions_") as tmp:
                p = Path(tmp) / f"clip.{media_ext}"
                p.write_bytes(media)
                clip = load_clip(clip_id, p, 0.0, None, sampling)
        clip.source, clip.start_time, clip.end_time = source, start, end
        return clip

    return Job(clip_id, load)


def caption_shards(shards: Sequence[str | os.PathLike], captioner: Captioner,
                   output_dir: str | os.PathLike | None = None, sampling: FrameSampling | None = None,
                   batch_size: int = 8, postprocess: PostprocessConfig | None = None, overwrite: bool = False,
                   retry_errors: bool = False, log_path: str | os.PathLike | None = None,
                   progress: bool = True) -> RunSummary:
    """Caption the samples of WebDataset tar `shards`, rewriting each sample's json member.

    Samples are `<key>.mp4` (or another video extension) or `<key>.jpg`/`.png` plus `<key>.json`; the
    json's ``caption`` (and ``caption_error``, ``caption_model``) are set, every other member is copied
    byte for byte. Each shard is written to a temp file and renamed over the original, or into
    `output_dir` under the same name. The work log (default ``<output folder>/.caption-log.jsonl``)
    records finished samples and shards so an interrupted run continues.
    """
    t0 = time.perf_counter()
    shards = [Path(s) for s in shards]
    if not shards:
        raise ValueError("no shards given")
    names = [s.name for s in shards]
    if len(set(names)) != len(names) and output_dir is not None:
        raise ValueError("shards written to one output folder need distinct file names")
    out_dir = Path(output_dir) if output_dir is not None else None
    log = Path(log_path) if log_path is not None else (out_dir or shards[0].parent) / ".caption-log.jsonl"
    sampling = sampling or FrameSampling()
    post = postprocess or PostprocessConfig()
    logged: dict[tuple[str, str], dict] = {}
    done_shards: set[str] = set()
    if log.exists():
        for entry in read_jsonl(log, allow_partial=True):
            if entry.get("done"):
                done_shards.add(entry["shard"])
            elif "key" in entry:
                logged[(entry["shard"], entry["key"])] = {k: entry.get(k) for k in CAPTION_FIELDS}
    summary = RunSummary()
    for shard in shards:
        target = (out_dir / shard.name) if out_dir is not None else shard
        shard_id = str(shard.resolve())
        if shard_id in done_shards and target.exists():
            continue
        members, samples = _read_shard(shard)
        metas: dict[str, dict] = {}
        jobs: list[Job] = []
        for key, exts in samples.items():
            if "json" not in exts:
                continue
            info, data = members[exts["json"]]
            summary.total += 1
            try:
                meta = json.loads(data)
                if not isinstance(meta, dict):
                    raise ValueError(f"expected a JSON object, got a {type(meta).__name__}")
            except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
                # Like the loader: skip the sample (its members are copied unchanged), record it, go on.
                summary.errors["invalid_json"] += 1
                summary.skipped.append(f"{shard}: sample {key}: invalid json member ({e})")
                logger.warning("skipping %s", summary.skipped[-1])
                continue
            metas[key] = meta
            if (shard_id, key) in logged:
                meta.update(logged[(shard_id, key)])
                summary.resumed += 1
                continue
            if not _needs_caption(meta, overwrite, retry_errors):
                summary.already_captioned += 1
                continue
            media_ext = media_member(exts)
            if media_ext is None:
                meta.update(caption="", caption_error=f"unreadable: sample {key} has no video or image member",
                            caption_model=captioner.name)
                summary.errors["unreadable"] += 1
                continue
            jobs.append(_shard_job(key, shard, meta, media_ext, members[exts[media_ext]][1], sampling))
        for batch, fields in _run_jobs(jobs, captioner, batch_size, post, progress, f"captioning {shard.name}"):
            for job, f in zip(batch, fields, strict=True):
                key = job.clip_id
                metas[key].update(f)
                append_jsonl(log, {"shard": shard_id, "key": key, **f})
                if f["caption_error"]:
                    summary.errors[_error_tag(f["caption_error"])] += 1
                else:
                    summary.captioned += 1
        new_members = []
        for info, data in members:
            key, ext = split_sample_name(info.name)
            if info.isfile() and ext == "json" and key in metas:
                data = json.dumps(metas[key], sort_keys=True, ensure_ascii=False).encode("utf-8")
                info = _copy_info(info, len(data))
            new_members.append((info, data))
        _write_shard(target, new_members)
        append_jsonl(log, {"shard": shard_id, "done": True})
        summary.outputs.append(str(target))
    log.unlink(missing_ok=True)
    summary.seconds = time.perf_counter() - t0
    return summary


def _copy_info(info: tarfile.TarInfo, size: int) -> tarfile.TarInfo:
    new = tarfile.TarInfo(info.name)
    for attr in ("mode", "mtime", "uid", "gid", "uname", "gname", "type"):
        setattr(new, attr, getattr(info, attr))
    new.size = size
    return new


def expand_shards(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Shard files from paths that are tar files or folders holding them (sorted, hidden files skipped)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.glob("*.tar") if not q.name.startswith("."))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such shard file or folder")
    if not out:
        raise FileNotFoundError(f"no .tar shards found in {[str(p) for p in paths]}")
    return out

