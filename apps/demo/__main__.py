r"""The main job: train a tiny text-to-video model on the demo world and show that it follows its captions.

    uv run apps/demo                      # about 20 minutes on 2 CPU cores; everything under runs/demo/
    uv run apps/demo --budget 60          # longer training (the same phases, more time for each)
    uv run apps/demo --no-reward          # stop after the DiT (no reward backpropagation)

The demo world (`ea_data.synthetic`): each scene shows one object whose colour, shape and direction of
motion its caption states, `demo_caption("red", "circle", "left") == "a red circle moves left"`. The 16
`HELD_OUT` combinations never appear in training; the run measures how well the trained model
generates them (`ea_data.clip_eval`).

Phases (each skipped when its output exists, so a killed run resumes; times go to eval.json):
  1. synthesize   raw videos of the demo world: hard cuts, subtitled, static, too-fast and short scenes
  2. curate       `ea-data run`: scene split, motion / text scores, filters, WebDataset shards (64 px)
  3. caption      `ea-captions --backend metadata`: each clip gets its scene's caption
  4. text encoder a random T5 with a word-level tokenizer (apps/demo/text_encoder.py; one token per word)
  5. train VAE    `apps/train_vae` on a demo-sized Slice VAE (2x spatial compression, 16 px, 5-frame
                  clips, object-weighted loss, posterior started at log-variance -6, the LR decayed over
                  the share's last quarter), for 20 % of the time budget but at least 2800 steps
  6. latents      held-out clips encoded once (validation); training latents + T5 embeddings cached by
                  `apps/train_dit --latent-cache` (ea_dit.latent_cache)
  7. train DiT    `apps/train_dit` on a demo-sized VideoDiT (patch 2, 64 wide, 4 blocks with motion
                  modules) from the cache, in chunks (35:27 of the time left after the VAE, against the
                  reward phase); after each chunk the held-out prompts are sampled
                  and scored (match rate against training time)
  8. reward       `python -m ea_data.scoring.world_reward`: a clip classifier of colour and direction trained
                  on the curated clips, plus a colour-coverage term (pixels of the asked colour in every
                  frame), then `apps/train_reward`: reward backpropagation of the DiT on the training
                  prompts (held-out prompts never seen) for the rest of the budget
  9. evaluate     eval.json (targets, match rates before / after the reward phase, VAE PSNR, validation
                  loss), samples.png, report.html

Run folder (`runs/demo/`), self-describing for `apps/generate --run runs/demo`:
  run.json   {"format": "easyanimate-run/1", "dit": "dit_reward/dit" (or "dit/final"), "vae": "vae/final",
              "text_encoder": "text_encoder", "height": 16, "width": 16, "frames": 5, "fps": 2,
              "sampler": "ddim", "steps": 25, "guidance_scale": 4.0,
              "prompt_function": "ea_data.synthetic.demo_caption", "held_out": [[color, shape, direction]...]}
             paths are relative to the folder holding run.json.
  eval.json  targets and measurements; report.html (offline, images embedded); samples.png.

Sizes were chosen from measured step times on a 2-core CPU (see the README's demo section).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ea_core.atomic import atomic_write_json, atomic_write_text

HERE = Path(__file__).resolve().parent
APPS = HERE.parent  # the other apps, run as subprocesses

RES = 16  # pixels of training and sampling frames
FRAMES = 5  # frames per clip
STRIDE = 4  # every 4th source frame: a clip spans 17 frames (2.1 s at 8 fps), the object crosses 0.4 of it
FPS = 8 / STRIDE
# 2x spatial compression, none in time: 16 x 16 x 5 frames -> 8 x 8 x 5 latents. Measured (200 s of training,
# one thread): a 4x spatial + 2x temporal VAE at 32 px (32/32/64 channels) and a 4x spatial one (16/32/32)
# reached 20 dB and kept the direction of 0 % of held-out clips; this one learns colour and direction
# in a few hundred steps (tests/e2e/test_demo.py).
VAE_CONFIG = dict(block_out_channels=(16, 32), latent_channels=4, layers_per_block=1, norm_num_groups=8,
                  down_block_types=("SpatialDownBlock3D", "SpatialDownBlock3D"),
                  up_block_types=("SpatialUpBlock3D", "SpatialUpBlock3D"))
SPATIAL_COMPRESSION = 2
# VAE schedule, measured (held-out PSNR, 1 thread): a fresh VAE's posterior std of ~1 drowns its latent
# mean (rms ~0.2), and training spent ~1400 steps growing it before reconstructions improved (default runs
# with a constant LR: 25.4, 26.0, 29.1 dB). Starting the posterior's log-variance at -6 (std ~0.05) and
# decaying the LR over the last quarter of the share (warm-up-stable-decay; a cosine over the whole share
# stopped the early phase: 21.7 dB): 1400 steps gave 27.9 dB against 21.7 dB from the plain start; on a
# trained VAE, 300 decay steps gave 30.8 dB against 29.3 dB at a constant LR.
VAE_SCHEDULE = ["--lr", "2e-3", "--posterior-logvar-init", "-6", "--lr-schedule", "wsd", "--decay-fraction", "0.25"]
# At least this many VAE steps at the default budget (fewer below it), however long they take: measured
# held-out 31.1 and 31.0 dB after 2737 and 2820 steps in the 4-minute share, 28.7 dB after 1769 steps on the
# same machine type when it ran 40 % slower; with a 2400-step floor three runs ended at 30.2, 30.6 and 29.8 dB
# (the time share gave ~2250 steps, so the floor decided). The DiT and reward phases then share the time left.
VAE_MIN_STEPS = 2800
DIT_CONFIG = dict(hidden_size=64, depth=4, num_heads=4, patch_size=2, motion_num_heads=4, motion_norm_groups=8,
                  motion_max_len=64, prediction_type="v_prediction")
SAMPLER = {"sampler": "ddim", "steps": 25, "guidance_scale": 4.0}
SEEDS = (0, 1)
# Shares of --budget for VAE training, DiT training and reward backpropagation (the DiT and reward phases
# get these shares of the time actually left when they start, so a slow machine still ends on time); the
# rest (about 3.5 minutes
# of the default 20 on 2 cores) is synthesis, curation, captions, caches, the reward classifier and
# evaluation. Measured (README): held-out colour stays near 65-80 % with DiT steps alone (from 2000 to 9900
# steps in a 60-minute run), and reward backpropagation with the world reward lifts it to 84-94 % in 60-130
# iterations (about 2.5 s each on 2 cores). With 20/45/15 % shares a default run measured colour 84 % and
# direction 91 % (71 reward iterations); 60 more iterations on that model gave 91 % / 94 %. With 20/35/27 %
# the default run measured colour 91 %, direction 91 % (193 iterations at 1.7 s) and VAE 31.1 dB in 19.3 min.
VAE_SHARE, DIT_SHARE, REWARD_SHARE = 0.2, 0.35, 0.27
# Reward backpropagation LR, measured on one DiT (3497 steps; 16 held-out triples x 8 seeds, 324 s of reward
# training each): 1e-4 -> colour 93.8 %, direction 95.3 % (144 iterations); 2e-4 -> 97.7 %, 95.3 % (136).
# With the coverage term, on two default runs' DiTs (5.4 min each, 16 triples x 8 seeds): 2e-4 -> colour 96.1 and
# 87.5 %, direction 92.2 and 89.8 %; 4e-4 -> colour 97.7 and 94.5 %, direction 93.0 and 96.1 %.
REWARD_LR = "4e-4"
# Reserves of the budget, measured on 2 cores at 20 minutes: after the VAE, everything but DiT and reward
# training (3 chunk evaluations ~15 s, reward classifier ~40 s, final evaluation and report ~20 s); after the
# reward classifier, only the final evaluation and report.
RESERVE_SHARE, FINAL_RESERVE_SHARE = 0.075, 0.03
TARGETS = {"color": 0.9, "direction": 0.7, "vae_psnr": 30.0, "minutes": 20.0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="uv run apps/demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--budget", type=float, default=20.0,
                   help="wall-clock minutes for the whole run (default 20; a resumed run gets it again for what "
                        f"is left). VAE training gets {int(100 * VAE_SHARE)} %% of it, but at least "
                        f"{VAE_MIN_STEPS} steps (fewer for budgets below 20); DiT training and reward "
                        "backpropagation then split the time left "
                        f"{int(100 * DIT_SHARE)}:{int(100 * REWARD_SHARE)} (about {int(100 * DIT_SHARE)} %% and "
                        f"{int(100 * REWARD_SHARE)} %% of the budget on an idle 2-core machine)")
    p.add_argument("--videos", type=int, default=80, help="raw videos of the demo world (default 80, 5 scenes each)")
    p.add_argument("--images", type=int, default=120, help="raw still images (default 120)")
    p.add_argument("--dit-chunks", type=int, default=3,
                   help="DiT training pieces, each followed by a held-out evaluation (default 3)")
    p.add_argument("--reward", action=argparse.BooleanOptionalAction, default=True,
                   help="post-train the DiT by reward backpropagation on the demo world's reward (a colour and "
                        "direction classifier trained on the clips; default on). --no-reward stops after the DiT")
    p.add_argument("--workers", type=int, default=2, help="curation worker processes (default 2)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per process (default 0: every core when the machine is idle, 1 when its "
                        "load average is already above cores - 1: on a busy CPU extra OpenMP threads spin-wait; "
                        "measured 50 s vs 5.6 s per DiT step at load 15 on 2 cores)")
    return p.parse_args(argv)


def pick_threads(requested: int) -> int:
    """CPU threads for the run's processes (see --threads)."""
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] > cores - 1
    except OSError:
        busy = False
    return 1 if busy else cores


class Phases:
    """Wall time per phase, kept in <out>/timings.json so a resumed run reports every phase."""

    def __init__(self, out: Path):
        self.path = out / "timings.json"
        self.times = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name: str, cmd: list[str]) -> None:
        print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True)
        self.add(name, time.time() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.times[name] = round(self.times.get(name, 0.0) + seconds, 1)
        print(f"=== {name}: {seconds:.1f} s", flush=True)
        _write_json(self.path, self.times)


def main(argv=None) -> int:
    a = parse_args(argv)
    start = time.time()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    raw, data = out / "raw", out / "data"
    phases = Phases(out)
    budget = a.budget * 60
    threads = pick_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by every phase's process
    import torch

    torch.set_num_threads(threads)
    print(f"=== {threads} CPU thread(s) per process; load average {_load()} on {os.cpu_count()} cores", flush=True)

    if not (raw / "metadata.jsonl").exists():
        phases.run("synthesize", [py, "-m", "ea_data.synthetic", str(raw), "--demo", "--videos", str(a.videos),
                                  "--images", str(a.images), "--width", "128"])
    if not (data / "manifest.jsonl").exists():
        # Thresholds measured on the demo world: moving scenes score 0.3-5.5, static 0, too-fast >= 17.
        phases.run("curate", [py, "-m", "ea_data", "run", str(raw), str(data), "--workers", str(a.workers),
                              "--scorers", "motion,text", "--min-seconds", "2", "--max-seconds", "4",
                              "--min-scene-len", "8", "--min-motion", "0.2", "--max-motion", "12",
                              "--shard-resolution", "64x64", "--quiet"])
    if not (data / ".captioned").exists():
        captioner = ["--backend", "metadata", "--metadata", str(raw / "metadata.jsonl"), "--no-progress"]
        t0 = time.time()
        subprocess.run([py, "-m", "ea_captions", str(data / "manifest.jsonl"), "--root", str(raw), *captioner],
                       check=True)
        subprocess.run([py, "-m", "ea_captions", "--shards", str(data / "shards"), *captioner], check=True)
        (data / ".captioned").write_text("")
        phases.add("caption", time.time() - t0)

    from text_encoder import build_word_level_t5, demo_vocabulary

    text_encoder = build_word_level_t5(out / "text_encoder", demo_vocabulary())
    common = ["--data", str(data / "shards"), "--device", a.device, "--size", str(RES), "--num-workers", "0",
              "--no-tensorboard"]

    # ---- VAE: a demo-sized Slice VAE on the training clips, the object's pixels weighted x20.
    vae_dir = out / "vae"
    if not (vae_dir / "final" / "config.json").exists():
        init = _save_init_vae(out / "vae_init")
        phases.run("train VAE", [py, str(APPS / "train_vae"), "--vae", str(init), "--out", str(vae_dir),
                                 "--steps", "100000", "--time-limit", str(round(VAE_SHARE * budget)),
                                 "--min-steps", str(round(VAE_MIN_STEPS * min(1.0, a.budget / 20))), "--batch-size", "8",
                                 "--frames", str(FRAMES), "--frame-stride", str(STRIDE), "--image-video-ratio", "0",
                                 *VAE_SCHEDULE, "--object-weight", "20", "--save-every", "200",
                                 "--log-every", "10", *common])
    # ---- held-out clips: VAE PSNR and the DiT's validation set (drawn directly, never in training)
    val_cache = out / "val_cache"
    vae_eval_path = out / "vae_eval.json"
    if not vae_eval_path.exists() or not (val_cache / "meta.json").exists():
        t0 = time.time()
        from evaluate import encode_held_out

        _write_json(vae_eval_path, encode_held_out(vae_dir / "final", text_encoder, val_cache, out / "report_assets",
                                                   RES, FRAMES, STRIDE, a.device, shards=data / "shards"))
        phases.add("held-out latents", time.time() - t0)
    vae_eval = json.loads(vae_eval_path.read_text())

    # ---- DiT, in chunks; each chunk resumes the previous one and ends with a held-out evaluation.
    dit_dir = out / "dit"
    init = _save_init_dit(out / "dit_init", caption_channels=64)
    _write_run_json(out)
    curve_path = out / "match_curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.exists() else []
    # the DiT's part of the training time left (after a slow VAE phase, less than DIT_SHARE of the budget)
    left = _time_left(start, budget) * DIT_SHARE / (DIT_SHARE + REWARD_SHARE)
    chunk = max(1.0, left / max(1, a.dit_chunks - len(curve)))
    from evaluate import evaluate_run

    result = None  # the newest evaluation of the run's current DiT (with its samples saved)
    for _ in range(len(curve), a.dit_chunks):
        phases.run("train DiT", [py, str(APPS / "train_dit"), "--dit", str(init), "--vae", str(vae_dir / "final"),
                                 "--text-encoder", str(text_encoder), "--out", str(dit_dir), "--steps", "1000000",
                                 "--time-limit", str(round(chunk)), "--batch-size", "32", "--frames", str(FRAMES),
                                 "--frame-stride", str(STRIDE), "--clip-start", "centre", "--image-video-ratio",
                                 "0", "--lr", "1e-3", "--warmup-steps", "100", "--weight-decay", "0",
                                 "--ema-decay", "0.99", "--latent-cache", str(out / "latent_cache"),
                                 "--cache-passes", "2", "--val-cache", str(val_cache), "--val-every", "100",
                                 "--save-every", "500", "--log-every", "20", "--sample-steps", "0", *common])
        t0 = time.time()
        result = evaluate_run(out, seeds=SEEDS, device=a.device, save=True, **SAMPLER)
        metrics = [json.loads(x) for x in (dit_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        train_s = sum(phases.times.get(k, 0) for k in ("train DiT",))
        curve.append({"dit_train_seconds": round(train_s, 1), "step": metrics[-1]["step"],
                      **{k: result["rates"][k] for k in ("color", "direction", "both")}})
        _write_json(curve_path, curve)
        phases.add("evaluate", time.time() - t0)
        print(f"=== held-out after {curve[-1]['step']} DiT steps: {json.dumps(curve[-1])}", flush=True)

    reward = None
    if a.reward:
        reward = _reward_backprop(out, phases, py, curve, a, start, budget)
        _write_run_json(out, dit=REWARD_DIT)
        result = None  # a new DiT: evaluate it
    from report import write_report

    if result is None:  # after the reward phase, or a resumed run whose DiT chunks were all done
        t0 = time.time()
        result = evaluate_run(out, seeds=SEEDS, device=a.device, save=True, **SAMPLER)
        phases.add("evaluate", time.time() - t0)
    if reward is not None:
        reward["after"] = {k: result["rates"][k] for k in ("color", "direction", "both")}
    total = time.time() - start
    summary = build_eval(out, result, vae_eval, curve, phases.times, total, a)
    summary["reward_backprop"] = reward
    _write_json(out / "eval.json", summary)
    write_report(out, summary)
    print("\n=== eval.json\n" + json.dumps({k: summary[k] for k in ("held_out", "reward_backprop", "vae",
                                                                   "dit_validation", "time")}, indent=1))
    return 0


def build_eval(out: Path, result: dict, vae_eval: dict, curve: list, times: dict, total: float, a) -> dict:
    metrics = [json.loads(x) for x in (out / "dit" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    val = [(r["step"], r["val_mse"]) for r in metrics if "val_mse" in r]
    vae_metrics = [json.loads(x) for x in (out / "vae" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rates = result["rates"]
    manifest = [json.loads(x) for x in (out / "data" / "manifest.jsonl").read_text().splitlines() if x.strip()]
    rejected: dict[str, int] = {}
    for r in manifest:
        if r.get("status") != "kept":
            reason = r.get("reject_reason") or r.get("status")
            rejected[reason] = rejected.get(reason, 0) + 1
    phase_total = sum(times.values())
    return {
        "targets": {"color_match": f">= {TARGETS['color']}", "direction_match": f">= {TARGETS['direction']}",
                    "vae_psnr_db": f">= {TARGETS['vae_psnr']}", "dit_val_loss": "falls",
                    "minutes": f"<= {TARGETS['minutes']} (default run, 2 CPU cores)"},
        "held_out": {"triples": len(result["clips"]) // len(SEEDS), "seeds": list(SEEDS), **rates,
                     "color_met": rates["color"] >= TARGETS["color"],
                     "direction_met": rates["direction"] >= TARGETS["direction"],
                     "sampler": SAMPLER, "per_clip": result["clips"]},
        "vae": {**vae_eval, "met": vae_eval["psnr"] >= TARGETS["vae_psnr"],
                "train_steps": vae_metrics[-1]["step"] if vae_metrics else 0},
        "dit_validation": {"timesteps": "100,300,500,700,900 (fixed noise, seed 0)", "curve": val,
                           "start": val[0][1] if val else None, "end": val[-1][1] if val else None,
                           "falls": bool(val) and val[-1][1] < val[0][1],
                           "train_steps": metrics[-1]["step"] if metrics else 0},
        "match_vs_time": curve,
        "curation": {"clips": sum(r.get("type") != "image" for r in manifest),
                     "kept": sum(r.get("status") == "kept" and r.get("type") != "image" for r in manifest),
                     "images_kept": sum(r.get("status") == "kept" and r.get("type") == "image" for r in manifest),
                     "rejected": rejected},
        "time": {"total_minutes": round(total / 60, 2), "phase_seconds": times,
                 "phases_minutes": round(phase_total / 60, 2), "budget_minutes": a.budget,
                 "met": max(total, phase_total) <= TARGETS["minutes"] * 60,
                 "note": "total is this invocation's wall time (a resumed run counts only its own part); "
                         "phases sum every invocation"},
        "machine": {"cpus": os.cpu_count(), "threads": int(os.environ.get("OMP_NUM_THREADS", 0)),
                    "platform": platform.platform(), "load_average": _load()},
    }


def _load():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _save_init_vae(path: Path) -> Path:
    import torch

    from ea_vae import SliceVAE, SliceVAEConfig

    if not (path / "config.json").exists():
        torch.manual_seed(0)
        SliceVAE(SliceVAEConfig(**VAE_CONFIG)).save_pretrained(path)
    return path


def _save_init_dit(path: Path, caption_channels: int) -> Path:
    import torch

    from ea_dit import VideoDiT, VideoDiTConfig

    if not (path / "config.json").exists():
        torch.manual_seed(0)
        latent = RES // SPATIAL_COMPRESSION
        VideoDiT(VideoDiTConfig(in_channels=VAE_CONFIG["latent_channels"], sample_size=latent,
                                caption_channels=caption_channels, **DIT_CONFIG)).save_pretrained(path)
    return path


def _write_run_json(out: Path, dit: str = "dit/final") -> None:
    from ea_data.synthetic import HELD_OUT

    _write_json(out / "run.json", {
        "format": "easyanimate-run/1", "dit": dit, "vae": "vae/final", "text_encoder": "text_encoder",
        "height": RES, "width": RES, "frames": FRAMES, "fps": FPS, **SAMPLER,
        "prompt_function": "ea_data.synthetic.demo_caption", "held_out": [list(t) for t in HELD_OUT]})


REWARD_DIT = "dit_reward/dit"  # the DiT after reward backpropagation (run.json's "dit" once it exists)
REWARD_MODEL_STEPS = 600  # reward classifier steps at the default budget (about 40 s on 2 cores; fewer below)
# Weight of the reward's colour-coverage term (ea_data.scoring.world_reward.color_coverage). The classifier alone
# pays a faint object (a few blurred pixels of a small star or triangle) nearly in full; every colour miss left
# after reward training was such a clip. Measured on one default run's DiT, 321 s of reward training each,
# held-out colour / direction on seeds 0-1 and 2-7: classifier alone 90.6 / 93.8 % and 77.1 / 81.2 %;
# weight 1: 100 / 93.8 % and 92.7 / 91.7 %; weight 2: 100 / 96.9 % and 94.8 / 90.6 %.
COVERAGE_WEIGHT = 2.0


def _time_left(start: float, budget: float) -> float:
    """Seconds of the budget left for training: the budget less the time spent since `start` and a reserve for
    what follows the training phases (evaluations, the reward classifier, report; ~1.5 min at 20 minutes)."""
    return budget - (time.time() - start) - RESERVE_SHARE * budget


def _reward_backprop(out: Path, phases: Phases, py: str, curve: list, a, start: float, budget: float) -> dict:
    """Train the demo world's reward (a colour + direction classifier of clips, ea_data.scoring.world_reward)
    on the training clips, then post-train the DiT by reward backpropagation (apps/train_reward) on the
    training triples' prompts; held-out prompts stay unseen. Returns what to report (before = the last
    DiT-only evaluation; the caller adds "after")."""
    from ea_data.synthetic import demo_caption, demo_triples

    reward_dir, post = out / "reward", out / "dit_reward"
    if not (reward_dir / "reward.json").exists():
        phases.run("train reward model", [py, "-m", "ea_data.scoring.world_reward", "--data",
                                          str(out / "data" / "shards"), "--out", str(reward_dir), "--size", str(RES),
                                          "--frames", str(FRAMES), "--frame-stride", str(STRIDE), "--steps",
                                          str(max(20, round(REWARD_MODEL_STEPS * min(1.0, a.budget / 20)))),
                                          "--coverage-weight", str(COVERAGE_WEIGHT)])
    if not (post / "dit" / "config.json").exists():
        prompts = out / "reward_prompts.txt"
        atomic_write_text(prompts, "\n".join(demo_caption(*t) for t in demo_triples()) + "\n")
        shutil.rmtree(post, ignore_errors=True)  # a run killed mid-way starts its post-training again
        # what is left of the budget (the classifier's time is spent); the final evaluation's reserve stays
        reward_time = max(1, round(_time_left(start, budget) + (RESERVE_SHARE - FINAL_RESERVE_SHARE) * budget))
        phases.run("reward backprop", [py, str(APPS / "train_reward"), "--dit", str(out / "dit" / "final"),
                                       "--vae", str(out / "vae" / "final"), "--text-encoder",
                                       str(out / "text_encoder"), "--reward", str(reward_dir), "--prompts-file",
                                       str(prompts), "--batch-prompts", "16", "--out", str(post), "--frames",
                                       str(FRAMES), "--steps", str(SAMPLER["steps"]), "--guidance-scale",
                                       str(SAMPLER["guidance_scale"]), "--scored-latents", str(FRAMES),
                                       "--grad-steps", "last_k", "--grad-k", "2", "--train", "all", "--lr", REWARD_LR,
                                       "--iters", "100000", "--time-limit", str(reward_time),
                                       "--device", a.device])
    rows = [json.loads(x) for x in (post / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"reward": "demo_world: (p(colour asked) + p(direction asked) + w * colour coverage) / (2 + w), "
                      f"p from a clip classifier, w = {COVERAGE_WEIGHT:g}; max 1",
            "prompts": "the training triples (HELD_OUT never seen)", "iterations": len(rows),
            "reward_curve": [round(r["reward"], 4) for r in rows],
            "before": {k: curve[-1][k] for k in ("color", "direction", "both")} if curve else None}


def _write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
