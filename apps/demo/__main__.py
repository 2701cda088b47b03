r"""The main job on the built-in default: a tiny end-to-end EasyAnimate run on synthetic data.

    uv run apps/demo                       # everything under runs/demo/, a few minutes on a laptop CPU

Steps (each one is skipped when its output already exists, so a killed run resumes):
  1. synthesize   captioned raw videos with hard cuts, motion and subtitles   -> raw/
  2. curate       `ea-data run`: scene split, scores, filters, WebDataset shards -> data/
  3. caption      `ea-captions --backend metadata`: clip captions from the source metadata
  4. text encoder a small random T5 saved locally (real runs: --text-encoder with a T5 path / hub id)
  5. train VAE    `apps/train_vae` (tiny Slice VAE)                               -> vae/
  6. train DiT    `apps/train_dit` (tiny VideoDiT with motion module)             -> dit/
  7. samples      videos generated from captions (mp4 + gif), loss plots, summary.json

Everything is CPU-sized by default; the same apps take real data, models and sizes through their flags.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

APPS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(APPS))
from _shared import build_demo_text_encoder  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="uv run apps/demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--videos", type=int, default=6, help="synthetic raw videos (default 6, 3 scenes each)")
    p.add_argument("--vae-steps", type=int, default=400, help="VAE training steps (default 400)")
    p.add_argument("--dit-steps", type=int, default=400, help="DiT training steps (default 400)")
    p.add_argument("--vae-size", type=int, default=32, help="VAE training resolution in pixels (default 32)")
    p.add_argument("--size", type=int, default=64, help="DiT training resolution in pixels (default 64)")
    p.add_argument("--frames", type=int, default=5, help="frames per training clip, 1 + 4k (default 5)")
    p.add_argument("--workers", type=int, default=2, help="curation worker processes (default 2)")
    p.add_argument("--text-encoder", default=None,
                   help="T5 path or hub id; default: a small random T5 built locally (no download)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    return p.parse_args(argv)


def run(step: str, cmd: list[str]) -> None:
    print(f"\n=== {step}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    print(f"=== {step} done in {time.time() - t0:.1f} s", flush=True)


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    raw, data = out / "raw", out / "data"

    if not (raw / "metadata.jsonl").exists():
        run("1/7 synthesize", [py, "-m", "ea_data.synthetic", str(raw), "--videos", str(a.videos),
                               "--images", "4", "--width", "256", "--height", "192"])
    if not (data / "manifest.jsonl").exists():
        run("2/7 curate", [py, "-m", "ea_data", "run", str(raw), str(data), "--workers", str(a.workers),
                           "--shard-max-side", "128"])
    if not (data / ".captioned").exists():
        captioner = ["--backend", "metadata", "--metadata", str(raw / "metadata.jsonl"), "--no-progress"]
        run("3/7 caption", [py, "-m", "ea_captions", str(data / "manifest.jsonl"), "--root", str(raw),
                            *captioner])
        run("3/7 caption", [py, "-m", "ea_captions", "--shards", str(data / "shards"), *captioner])
        (data / ".captioned").write_text("")
    text_encoder = a.text_encoder or str(build_demo_text_encoder(out / "text_encoder"))
    print(f"\n=== 4/7 text encoder: {text_encoder}")

    common = ["--data", str(data / "shards"), "--frames", str(a.frames), "--device", a.device]
    if not (out / "vae" / "final").exists():
        run("5/7 train VAE", [py, str(APPS / "train_vae"), "--out", str(out / "vae"), "--steps",
                              str(a.vae_steps), "--disc-start", str(a.vae_steps // 2), "--size", str(a.vae_size),
                              "--channels", "16,16,32,32", *common])
    if not (out / "dit" / "final").exists():
        run("6/7 train DiT", [py, str(APPS / "train_dit"), "--out", str(out / "dit"), "--steps",
                              str(a.dit_steps), "--vae", str(out / "vae" / "final"), "--text-encoder",
                              text_encoder, "--size", str(a.size), *common])

    manifest = [json.loads(x) for x in (data / "manifest.jsonl").read_text().splitlines() if x.strip()]
    summary = {
        "clips": len(manifest),
        "kept": sum(r.get("status") == "kept" for r in manifest),
        "rejected": {},
        "vae_reconstruction": json.loads((out / "vae" / "samples" / "metrics.json").read_text()),
        "dit_final_loss": _last_metric(out / "dit" / "metrics.jsonl", "loss"),
        "samples": sorted(str(p) for p in (out / "dit" / "samples").glob("*.mp4")),
        "plots": [str(out / "vae" / "loss.png"), str(out / "dit" / "loss.png")],
    }
    for r in manifest:
        if r.get("status") != "kept":
            reason = r.get("reject_reason") or r.get("error") or r.get("status")
            summary["rejected"][reason] = summary["rejected"].get(reason, 0) + 1
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "summary.json")
    print("\n=== 7/7 summary (" + str(out / "summary.json") + ")\n" + json.dumps(summary, indent=1))
    return 0


def _last_metric(path: Path, key: str):
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    values = [r[key] for r in rows if key in r]
    return values[-1] if values else None


if __name__ == "__main__":
    raise SystemExit(main())
