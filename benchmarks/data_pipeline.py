"""Split + score throughput: one decode pass per video against the usual separate passes.

    uv run benchmarks/data_pipeline.py                       # default: one 20 s 1920x1080 video (raw web video size)
    uv run benchmarks/data_pipeline.py --width 960 --height 540   # smaller input: scoring weighs more
    uv run benchmarks/data_pipeline.py --videos 4 --width 1920 --height 1080 --scene-seconds 8

Synthetic videos (ea_data.synthetic; scenes with hard cuts, pans, some subtitle plates) are written to a
temp dir. Both layouts run the same steps with the same default backends and settings: scene split
with PySceneDetect's AdaptiveDetector + HistogramDetector (detector "adaptive+histogram"), DIS motion on
every frame sampled at --sample-fps, rapidocr text detection on --text-frames frames per clip at a
480-px working size (1 onnxruntime thread), aesthetic only with --clip-weights and --aesthetic-head.
Both produce the same clips and the same scores; only the decoding differs:

- single: ``ea_data.split_and_score``: the file is decoded once (PyAV). Every frame is converted to
  RGB once and shrunk (bilinear) to the detection size for the detectors; the frames on the
  --sample-fps grid are shrunk to <= 640 px and kept until their scene closes, then every scorer of
  every clip of that scene runs on them.
- separate: the usual layout of independent passes, each decoding the video itself at full size:
  (1) PySceneDetect's own pass (``open_video`` OpenCV backend + ``SceneManager`` with the same two
  detectors, its automatic downscale): every frame decoded and converted to BGR; (2) a motion pass
  and (3) a text pass (and an aesthetic pass when configured) that each decode every clip's range
  (a seek to the key frame before it, then decode), converting the frames on the --sample-fps grid
  at full size and shrinking them to <= 640 px (``ea_data.scoring.sample_clip_frames``).

PyAV's scaled conversion (``iter_frames(size=...)``) was measured slower here than a full-size RGB
conversion + OpenCV bilinear resize (960x540 -> 320x180: 1.11 vs 0.89 CPU-s per 600 frames; the
decode alone is 0.58), so the single pass converts at full size and shrinks with OpenCV.

Measured: CPU seconds of this process (``time.process_time``: all threads, e.g. onnxruntime's) plus
its children, per layout; the figure of merit is video seconds processed per CPU second. Scorer
construction is done once, outside the timings. Writes ``results/data_pipeline-<device>.json``.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus finished children."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def make_inputs(out: Path, args) -> list:
    from ea_data.synthetic import SceneSpec, make_video

    rng = np.random.default_rng(args.seed)
    truths = []
    motions = ("static", "slow", "fast")
    for v in range(args.videos):
        specs = []
        for s in range(args.scenes):
            text = 0.03 if (v + s) % 2 == 0 else 0.0
            spec = SceneSpec.random(rng, int(args.scene_seconds * args.fps), motion=motions[(v + s) % 3],
                                    text_area=text)
            spec.background = ("blobs", "checker", "noise", "stripes")[(v + s) % 4]
            specs.append(spec)
        truths.append(make_video(out / f"video_{v:02d}.mp4", specs, args.width, args.height, args.fps))
    return truths


def run_single(paths, scorers, args) -> dict:
    from ea_data import split_and_score

    spans = []
    for p in paths:
        # The same PySceneDetect pair as the separate layout (the package default is now "blockmatch").
        scan = split_and_score(p, scorers, sample_fps=args.sample_fps, min_seconds=args.min_seconds,
                               max_seconds=args.max_seconds, detector="adaptive+histogram")
        spans += [(str(p), c.clip.start_frame, c.clip.end_frame) for c in scan.clips]
    return {"clips": len(spans), "spans": spans}


def run_separate(paths, scorers, args) -> dict:
    """The usual layout: a scene pass, then one pass per scorer, each decoding the video itself."""
    from scenedetect import SceneManager, open_video

    from ea_data.scenes import Scene, make_detectors, split_scene_clips
    from ea_data.scoring.frames import sample_clip_frames
    from ea_vae.video_io import video_info

    spans = []
    for p in paths:
        fps = video_info(p).fps
        manager = SceneManager()  # automatic downscale to a width of ~256 px, as detect_scenes does
        for det in make_detectors():
            manager.add_detector(det)
        manager.detect_scenes(open_video(str(p), backend="opencv"))
        found = manager.get_scene_list(start_in_scene=True)
        scenes = [Scene.from_frames(a.frame_num, b.frame_num, fps, k) for k, (a, b) in enumerate(found)]
        clips = split_scene_clips(scenes, args.min_seconds, args.max_seconds)
        spans += [(str(p), c.start_frame, c.end_frame) for c in clips]
        for fn in scorers.fns.values():  # one decoding pass per scorer
            for c in clips:
                fn(sample_clip_frames(p, c.start_time, c.end_time, args.sample_fps).frames)
    return {"clips": len(spans), "spans": spans}


def measure(fn, *a) -> dict:
    c0, w0 = cpu_seconds(), time.perf_counter()
    out = fn(*a)
    out.update(cpu_s=cpu_seconds() - c0, wall_s=time.perf_counter() - w0)
    return out


def main(argv=None) -> int:
    from ea_data.scoring.text import DEFAULT_TEXT_FRAMES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=1)
    p.add_argument("--scenes", type=int, default=4, help="scenes per video (hard cuts between them)")
    p.add_argument("--scene-seconds", type=float, default=5.0)
    p.add_argument("--width", type=int, default=1920, help="input video width (default 1920: raw inputs are HD)")
    p.add_argument("--height", type=int, default=1080, help="input video height (default 1080)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--sample-fps", type=float, default=2.0)
    p.add_argument("--text-frames", type=int, default=DEFAULT_TEXT_FRAMES,
                   help=f"OCR frames per clip (both layouts; default {DEFAULT_TEXT_FRAMES})")
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--max-seconds", type=float, default=10.0)
    p.add_argument("--clip-model", default="ViT-L-14")
    p.add_argument("--clip-weights", default=None, help="open_clip weights (path or tag) for the aesthetic scorer")
    p.add_argument("--aesthetic-head", default=None, help="improved-aesthetic-predictor head file")
    p.add_argument("--repeats", type=int, default=1, help="runs per layout (alternating); the best is kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from ea_data import build_scorers

    scorers = build_scorers(("motion", "text", "aesthetic"), clip_model=args.clip_model,
                            clip_weights=args.clip_weights, aesthetic_head=args.aesthetic_head,
                            text_frames=args.text_frames)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        truths = make_inputs(Path(tmp), args)
        print(f"wrote {len(truths)} synthetic videos in {time.perf_counter() - t0:.1f} s")
        paths = [t.path for t in truths]
        video_seconds = sum(t.num_frames / t.fps for t in truths)
        runs = {"single": [], "separate": []}
        for _ in range(args.repeats):
            runs["single"].append(measure(run_single, paths, scorers, args))
            runs["separate"].append(measure(run_separate, paths, scorers, args))
    results = {}
    for layout, rs in runs.items():
        best = min(rs, key=lambda r: r["cpu_s"])
        results[layout] = dict(best, video_seconds=video_seconds,
                               video_s_per_cpu_s=video_seconds / best["cpu_s"],
                               video_s_per_wall_s=video_seconds / best["wall_s"])
        print(f"{layout:>9}: {best['clips']} clips, {best['cpu_s']:.1f} CPU s, {best['wall_s']:.1f} wall s -> "
              f"{results[layout]['video_s_per_cpu_s']:.2f} video-s per CPU-s")
    speedup = results["single"]["video_s_per_cpu_s"] / results["separate"]["video_s_per_cpu_s"]
    results["speedup_cpu"] = speedup
    results["scorers"] = sorted(scorers.fns)
    results["skipped"] = scorers.skipped
    results["same_clips"] = runs["single"][0]["spans"] == runs["separate"][0]["spans"]
    for r in runs["single"] + runs["separate"]:
        r.pop("spans")
    results["layouts"] = {
        "single": "ea_data.split_and_score: one PyAV decode per video; every frame converted to RGB once and "
                  "shrunk bilinearly to the detection size (AdaptiveDetector + HistogramDetector); frames on the "
                  "sample-fps grid shrunk to <= 640 px and shared by all scorers of all clips",
        "separate": "PySceneDetect pass (OpenCV backend, SceneManager with the same two detectors, auto "
                    "downscale; every frame decoded and converted to BGR), then one pass per scorer (motion, "
                    "text) decoding each clip range with PyAV (seek to the key frame before it) and converting "
                    "the sample-fps grid frames at full size, shrunk to <= 640 px (sample_clip_frames)",
        "scoring": f"DIS motion on every sampled frame; rapidocr detection on {args.text_frames} frame(s) per clip "
                   "at a 480-px working size with 1 onnxruntime thread (same in both layouts)",
    }
    print(f"single-decode / separate passes: {speedup:.2f}x video-seconds per CPU-second (target >= 2x)")
    if not args.no_save:
        from _results import save_results

        path = save_results("data_pipeline", results, vars(args))
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
