"""The demo run's report: `report.html` (static, offline, every image embedded) and `samples.png`."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

import numpy as np

from ea_core.atomic import atomic_open, atomic_write_bytes


def _frames_u8(video) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8."""
    v = np.asarray(video, dtype=np.float32)
    return np.clip((v.transpose(1, 2, 3, 0) + 1) * 127.5, 0, 255).round().astype(np.uint8)


def _upscale(img: np.ndarray, k: int) -> np.ndarray:
    return img.repeat(k, axis=0).repeat(k, axis=1)


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _img_tag(png: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _strip(video, k: int = 3, gap: int = 2) -> np.ndarray:
    """Frames of one clip side by side (each upscaled k times), separated by `gap` white pixels."""
    frames = [_upscale(f, k) for f in _frames_u8(video)]
    h = frames[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    parts = []
    for f in frames:
        parts += [f, sep]
    return np.concatenate(parts[:-1], axis=1)


def samples_grid(samples: np.ndarray, k: int = 3) -> np.ndarray:
    """One grid: a row per (held-out prompt, seed), the clip's frames left to right."""
    rows = [_strip(samples[s, i], k) for i in range(samples.shape[1]) for s in range(samples.shape[0])]
    sep = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    out = []
    for r in rows:
        out += [r, sep]
    return np.concatenate(out[:-1], axis=0)


def _plot(curves: list[tuple[str, list, list]], xlabel: str, ylabel: str, title: str, hlines=()) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3))
    for label, xs, ys in curves:
        ax.plot(xs, ys, marker="o" if len(xs) < 15 else None, ms=3, lw=1.2, label=label)
    for y, label in hlines:
        ax.axhline(y, ls="--", lw=0.8, color="grey")
        ax.text(ax.get_xlim()[0], y, f" {label}", va="bottom", fontsize=7, color="grey")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _curation_examples(out: Path) -> list[tuple[str, int, bytes | None]]:
    """(reason, count, PNG of the middle frame of the first clip with that reason) for kept and each rejection."""
    from ea_vae.video_io import read_video

    manifest = _rows(out / "data" / "manifest.jsonl")
    groups: dict[str, list[dict]] = {}
    for r in manifest:
        if r.get("type") == "image":
            continue
        reason = "kept" if r.get("status") == "kept" else (r.get("reject_reason") or r.get("status") or "?")
        groups.setdefault(reason, []).append(r)
    cache: dict[str, np.ndarray] = {}
    result = []
    for reason, rows in sorted(groups.items(), key=lambda kv: (kv[0] != "kept", kv[0])):
        r = rows[0]
        png = None
        try:
            src = str(out / "raw" / r["source"]) if not os.path.isabs(r["source"]) else r["source"]
            if src not in cache:
                cache[src] = read_video(src)[0]
            frames = cache[src]
            mid = (int(r["start_frame"]) + int(r["end_frame"])) // 2
            png = _png(frames[min(mid, len(frames) - 1)])
        except Exception:  # an example frame is decoration: a missing one must not fail the report
            png = None
        result.append((reason, len(rows), png))
    return result


def write_report(out: Path, summary: dict) -> Path:
    """Write `<out>/samples.png` and `<out>/report.html` from eval.json's `summary` and the run's files."""
    assets = out / "report_assets"
    samples = np.load(assets / "samples.npy").astype(np.float32)  # (S, 16, 3, F, H, W)
    grid = samples_grid(samples)
    atomic_write_bytes(out / "samples.png", _png(grid))

    h = summary["held_out"]
    parts = [f"""<!doctype html><html><head><meta charset="utf-8"><title>easyanimate demo run</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}} .ok{{color:#070}} .no{{color:#b00}}
img{{image-rendering:pixelated}} h2{{margin-top:1.6em}}</style></head><body>
<h1>easyanimate demo run</h1>
<p>A tiny text-to-video model (Slice VAE + video DiT with motion modules) trained from scratch on the demo
world, evaluated on <b>{h['triples']} held-out colour/shape/direction combinations</b> that never appear in
training, {len(h['seeds'])} seeds each.</p>"""]
    parts.append("<h2>Targets</h2><table><tr><th>target</th><th>measured</th><th>met</th></tr>")
    v, d, t = summary["vae"], summary["dit_validation"], summary["time"]
    for name, measured, met in [
        ("object of the asked colour present, >= 90 % of held-out clips", f"{h['color']:.1%}", h["color_met"]),
        ("direction of motion right, >= 70 % (chance 25 %)", f"{h['direction']:.1%}", h["direction_met"]),
        ("VAE reconstruction PSNR >= 30 dB (held-out clips)", f"{v['psnr']:.2f} dB", v["met"]),
        ("DiT validation loss falls (fixed timesteps and noise)",
         f"{d['start']:.4f} -> {d['end']:.4f}" if d["start"] is not None else "n/a", d["falls"]),
        ("whole run <= 20 min", f"{t['total_minutes']:.1f} min (phases {t['phases_minutes']:.1f} min)", t["met"]),
    ]:
        parts.append(f"<tr><td>{name}</td><td>{measured}</td><td class={'ok' if met else 'no'}>"
                     f"{'yes' if met else 'no'}</td></tr>")
    parts.append("</table>")
    m = summary.get("machine", {})
    parts.append(f"<p>Machine: {m.get('cpus')} CPUs, load average {m.get('load_average')} at the end "
                 f"(other processes share the cores). Phase times (s): {html.escape(json.dumps(t['phase_seconds']))}</p>")

    # held-out grid and match table
    parts.append("<h2>Held-out prompts: generated frames, asked and measured</h2>"
                 f"<p>Sampler: {html.escape(json.dumps(h['sampler']))}. Colour: the largest blob of the asked "
                 "colour covers enough of the frame in at least half the frames; direction: the blob's centroid "
                 "track (<code>ea_data.clip_eval</code>).</p><table><tr><th>prompt</th><th>seed</th><th>frames</th>"
                 "<th>colour</th><th>measured direction</th><th>speed (frame/frame)</th></tr>")
    seeds = h["seeds"]
    for c in h["per_clip"]:
        s_i, p_i = seeds.index(c["seed"]), [x["prompt"] for x in h["per_clip"]].index(c["prompt"])
        strip = _png(_strip(samples[s_i, p_i], k=3))
        col = "ok" if c["color_match"] else "no"
        dcl = "ok" if c["direction_match"] else "no"
        parts.append(f"<tr><td>{html.escape(c['prompt'])}</td><td>{c['seed']}</td><td>{_img_tag(strip, c['prompt'])}</td>"
                     f"<td class={col}>{'present' if c['color_match'] else 'missing'}</td>"
                     f"<td class={dcl}>{c['measured_direction']}</td><td>{c['speed']:.3f}</td></tr>")
    parts.append(f"</table><p>Match rates: colour {h['color']:.1%}, direction {h['direction']:.1%}, both "
                 f"{h['both']:.1%} of {h['n']} clips.</p>")

    # curves
    parts.append("<h2>Training curves</h2>")
    dit_rows = _rows(out / "dit" / "metrics.jsonl")
    loss = [(r["step"], r["loss"]) for r in dit_rows if "loss" in r]
    val = d["curve"]
    if loss:
        parts.append(_img_tag(_plot([("per-batch loss", *zip(*loss))], "step", "loss", "DiT training loss"), "dit loss"))
    if val:
        parts.append(_img_tag(_plot([("val mse", *zip(*val))], "step", "noise MSE",
                                    "DiT validation loss (held-out clips, fixed t and noise)"), "val loss"))
    curve = summary.get("match_vs_time") or []
    if curve:
        xs = [c["dit_train_seconds"] / 60 for c in curve]
        parts.append(_img_tag(_plot([("colour", xs, [c["color"] for c in curve]),
                                     ("direction", xs, [c["direction"] for c in curve])],
                                    "DiT training minutes", "held-out match rate", "Match rate vs training time",
                                    hlines=[(0.9, "colour target"), (0.7, "direction target"), (0.25, "chance")]),
                              "match vs time"))
    rb = summary.get("reward_backprop")
    if rb:
        before, after = rb.get("before") or {}, rb.get("after") or {}
        parts.append("<h2>Reward backpropagation</h2>"
                     f"<p>Reward: {html.escape(rb['reward'])}. Prompts: {html.escape(rb['prompts'])}. "
                     f"{rb['iterations']} iterations (<code>apps/train_reward</code>). Held-out match rates "
                     "(same prompts, seeds and sampler):</p><table><tr><th></th><th>colour</th><th>direction</th>"
                     "<th>both</th></tr>")
        for name, r in (("DiT only", before), ("after reward backpropagation", after)):
            if r:
                parts.append(f"<tr><td>{name}</td><td>{r['color']:.1%}</td><td>{r['direction']:.1%}</td>"
                             f"<td>{r['both']:.1%}</td></tr>")
        parts.append("</table>")
        if rb["reward_curve"]:
            its = list(range(len(rb["reward_curve"])))
            parts.append(_img_tag(_plot([("mean reward of the batch", its, rb["reward_curve"])], "iteration",
                                        "reward", "World reward during reward backpropagation"), "reward curve"))
    vae_rows = _rows(out / "vae" / "metrics.jsonl")
    ps = [(r["step"], r["psnr"]) for r in vae_rows if "psnr" in r]
    if ps:
        parts.append(_img_tag(_plot([("train batch PSNR", *zip(*ps))], "step", "dB", "VAE training PSNR"), "vae psnr"))

    # VAE reconstructions
    parts.append(f"<h2>VAE reconstructions (held-out clips)</h2><p>PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.3f} over "
                 f"{v['clips']} clips; colour / direction still measurable in {v['reconstruction_match']['color']:.0%} / "
                 f"{v['reconstruction_match']['direction']:.0%} of the reconstructions. Top: original, bottom: "
                 "reconstruction.</p>")
    recon = np.load(assets / "vae_recon.npy").astype(np.float32)  # (2, 4, 3, F, H, W)
    for i in range(recon.shape[1]):
        both = np.concatenate([_strip(recon[0, i], 3), np.full((2, _strip(recon[0, i], 3).shape[1], 3), 255, np.uint8),
                               _strip(recon[1, i], 3)], axis=0)
        parts.append(_img_tag(_png(both), "original vs reconstruction") + "<br>")

    # curation
    cur = summary["curation"]
    parts.append(f"<h2>Curation (<code>ea-data run</code>)</h2><p>{cur['clips']} clips from the scene split, "
                 f"{cur['kept']} kept; {cur['images_kept']} images kept.</p><table><tr><th>outcome</th><th>clips</th>"
                 "<th>example (middle frame)</th></tr>")
    for reason, count, png in _curation_examples(out):
        parts.append(f"<tr><td>{html.escape(reason)}</td><td>{count}</td><td>"
                     f"{_img_tag(png, reason, 128) if png else ''}</td></tr>")
    parts.append("</table></body></html>")
    with atomic_open(out / "report.html", "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return out / "report.html"
