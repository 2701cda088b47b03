"""Scene detection: precision, recall and speed of every detector on synthetic and realistic videos.

    uv run benchmarks/scene_detection.py                  # both sets, every detector
    uv run benchmarks/scene_detection.py --sets realistic --detectors blockmatch adaptive+histogram

Sets (written to a temp dir, deterministic):
- synthetic: ea_data.synthetic.make_dataset, seeds 0-7, 4 videos each (128x96, 8 fps; static / slow /
  fast pans over textures, hard cuts only).
- realistic: ea_data.realistic.make_realistic_set (224x128, 24 fps; real photographs from
  scikit-image with pans, zooms, shake, motion blur, flashes, exposure ramps, light/shade passages,
  moving subjects, low-bitrate H.264 with keyframe quality jumps; hard cuts, fades, dissolves, wipes).

Matching: every ground-truth transition (a hard cut at frame c is the span [c, c]; a gradual one its
mixed frames [start, end]) is matched one-to-one with a reported boundary (a cut at c, or a
transition record [start, end]) whose span is within 2 frames of it. Precision = matched reports /
reports; recall = matched transitions / transitions. A gradual transition cut twice counts one false
cut. Also reported: recall on hard cuts alone, the largest frame error of matched hard cuts, and
frames per second of ``detect_scenes`` (decode included; one process; CPU time of this process), and
which transitions were missed, which reports were false and which hard cuts were found off their frame.

Detectors: every option of ``ea_data.scenes.detect_scenes`` and, as the baseline, PySceneDetect's
``AdaptiveDetector`` at its library defaults through its own ``scenedetect.detect`` (OpenCV decode).
Writes ``results/scene_detection-<device>.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

TOLERANCE = 2
BASELINE = "pyscenedetect-adaptive-defaults"


def match(truth: list[tuple[int, int]], found: list[tuple[int, int]], tol: int = TOLERANCE):
    """One-to-one matching of spans within `tol` frames; returns `(pairs, unmatched_found)`."""
    used, pairs = set(), []
    for a, b in truth:
        best = None
        for j, (c, d) in enumerate(found):
            if j in used:
                continue
            dist = max(0, c - b, a - d)
            if dist <= tol and (best is None or dist < best[0]):
                best = (dist, j)
        if best is not None:
            used.add(best[1])
            pairs.append(((a, b), found[best[1]]))
    return pairs, [f for j, f in enumerate(found) if j not in used]


def boundaries(scenes) -> list[tuple[int, int]]:
    """Reported boundaries of detect_scenes' records: cuts (c, c) and transition spans (start, end - 1)."""
    out = []
    for prev, s in zip(scenes[:-1], scenes[1:]):
        if s.is_transition:
            out.append((s.start_frame, s.end_frame - 1))
        elif not prev.is_transition:
            out.append((s.start_frame, s.start_frame))
    return out


def run_detector(name: str, path: str) -> list[tuple[int, int]]:
    if name == BASELINE:
        from scenedetect import AdaptiveDetector, detect

        return [(s[0].frame_num, s[0].frame_num) for s in detect(path, AdaptiveDetector())[1:]]
    from ea_data.scenes import detect_scenes

    return boundaries(detect_scenes(path, detector=name))


def make_sets(out: Path, names: list[str]) -> dict[str, list[tuple[str, list[tuple[int, int, str]]]]]:
    """`{set: [(video path, [(start, end, kind), ...])]}` with the generators' ground truth."""
    sets = {}
    if "synthetic" in names:
        from ea_data.synthetic import make_dataset

        items = []
        for seed in range(8):
            for r in make_dataset(out / f"synthetic{seed}", num_videos=4, num_images=0, seed=seed):
                items.append((str(out / f"synthetic{seed}" / r["file"]), [(c, c, "cut") for c in r["cuts"]]))
        sets["synthetic"] = items
    if "realistic" in names:
        from ea_data.realistic import make_realistic_set

        sets["realistic"] = [(t.path, [(x.start, x.end, x.kind) for x in t.transitions])
                             for t in make_realistic_set(out / "realistic")]
    return sets


def evaluate(name: str, items) -> dict:
    tp = n_found = n_truth = cut_truth = cut_tp = frames = 0
    cpu, worst, misses, false, off = 0.0, 0, [], [], []
    for path, truth in items:
        from ea_vae.video_io import video_info

        t0 = time.process_time()
        found = run_detector(name, path)
        cpu += time.process_time() - t0
        frames += video_info(path).num_frames
        spans = [(a, b if k == "cut" else b - 1) for a, b, k in truth]
        pairs, extra = match(spans, found)
        tp += len(pairs)
        n_found += len(found)
        n_truth += len(truth)
        cut_truth += sum(k == "cut" for *_, k in truth)
        hit = {t for t, _ in pairs}
        for (a, b), f in pairs:
            if a == b and (a, b, "cut") in [(x, y, k) for x, y, k in truth]:
                cut_tp += 1
                err = max(abs(f[0] - a), abs(f[1] - a))
                worst = max(worst, err)
                if err:
                    off += [f"{Path(path).name}:cut@{a}->{f[0]}"]
        misses += [f"{Path(path).name}:{k}@{a}" for (a, b, k), s in zip(truth, spans) if s not in hit]
        false += [f"{Path(path).name}@{f[0]}" for f in extra]
    return {"precision": round(tp / max(n_found, 1), 4), "recall": round(tp / max(n_truth, 1), 4),
            "hard_cut_recall": round(cut_tp / max(cut_truth, 1), 4), "max_cut_error_frames": worst,
            "transitions": n_truth, "reported": n_found, "matched": tp,
            "frames_per_second": round(frames / max(cpu, 1e-9), 1), "frames": frames,
            "missed": misses, "false": false, "off_cuts": off}


def main(argv=None) -> int:
    from ea_data.scenes import DETECTORS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["synthetic", "realistic"], choices=["synthetic", "realistic"])
    p.add_argument("--detectors", nargs="+", default=list(DETECTORS) + [BASELINE])
    p.add_argument("--no-save", action="store_true")
    a = p.parse_args(argv)
    from _results import save_results

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = make_sets(Path(tmp), a.sets)
        for set_name, items in sets.items():
            for det in a.detectors:
                r = {"set": set_name, "detector": det, **evaluate(det, items)}
                results.append(r)
                print(f"{set_name:10s} {det:32s} P={r['precision']:.3f} R={r['recall']:.3f} "
                      f"cutR={r['hard_cut_recall']:.3f} maxerr={r['max_cut_error_frames']} "
                      f"{r['frames_per_second']:.0f} fps  false={r['false'][:6]} missed={r['missed'][:6]}",
                      flush=True)
    if not a.no_save:
        save_results("scene_detection", results, config={"tolerance_frames": TOLERANCE, "sets": a.sets})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
