"""``ea-vae``: encode videos to Slice VAE latents, decode them back, or measure a round trip.

    ea-vae encode    video.mp4 latents.safetensors --model PATH
    ea-vae decode    latents.safetensors out.mp4   --model PATH
    ea-vae roundtrip in.mp4 out.mp4                --model PATH     # prints PSNR / SSIM

Videos are resized to a multiple of 8 (``--size``) and trimmed to ``1 + 4k`` frames. The latents file
holds the unscaled latents ``(1, C, 1 + k, H/8, W/8)`` under ``"latents"``; its safetensors metadata holds
the fps, the original and model sizes and the model config, so ``decode`` restores the original size.
Bad input (a missing, corrupt or non-video file, a truncated model, an output path that is one of the
inputs) exits with code 2 and a one-line message; nothing the user gave is overwritten. Changes to the
video the model needs (frames trimmed to 1 + 4k, sizes rounded to multiples of 8, even output sizes)
are reported on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ea_core.atomic import atomic_write
from ea_core.devices import DTYPES, resolve_device
from ea_core.files import WeightsFileError

from .metrics import psnr, ssim
from .model import SliceVAE
from .video_io import VideoReadError, frames_to_tensor, read_video, tensor_to_frames, write_video

LATENTS_FORMAT = "ea-vae-latents/1"
# Containers that take the H.264 stream `write_video` produces, plus animated GIF.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".gif")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _note(text: str) -> None:
    """Tell the user about a change to their video; stderr, so stdout stays the result."""
    print(f"ea-vae: note: {text}", file=sys.stderr)


def _refuse_overwrite(output: Path, *inputs: Path) -> None:
    """Raise unless `output` is a different file from every input (after links, `..` and hard links)."""
    for src in inputs:
        same = output.resolve() == src.resolve()
        if not same and output.exists() and src.exists():
            same = os.path.samefile(output, src)
        if same:
            raise CLIError(f"output {output} is the same file as the input {src}; refusing to overwrite it "
                           "(choose another output path)")


def _model_files(args: argparse.Namespace) -> list[Path]:
    folder = Path(args.model)
    return [folder / "config.json", folder / "model.safetensors"]


def _check_video_output(path: Path) -> None:
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        got = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise CLIError(f"output {path} has {got}; a video path must end in one of {', '.join(VIDEO_SUFFIXES)}")
    if path.is_dir():
        raise CLIError(f"output {path} is a folder; give a video file path")


def _need(module: str):
    """Import an optional dependency of the `video` extra, or fail with an install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CLIError(f"the ea-vae CLI needs {module!r}: pip install 'ea-vae[video]'") from e


# ----------------------------------------------------------------------------- arguments


def _parse_size(text: str) -> tuple[int, int] | int:
    """``"WxH"`` -> (W, H); ``"S"`` -> S (shorter side)."""
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
            if w <= 0 or h <= 0:
                raise ValueError
            return w, h
        s = int(text)
        if s <= 0:
            raise ValueError
        return s
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT or one integer, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ea-vae", description="Slice VAE: encode videos to latents, decode latents to videos.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, metavar="PATH",
                       help="SliceVAE folder (config.json + model.safetensors) or a diffusers AutoencoderKLMagvit "
                            "folder")
        p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="compute dtype (default fp32)")
        p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
        p.add_argument("--no-slicing", action="store_true", help="run the whole video at once")
        p.add_argument("--slice-frames", type=int, default=4, metavar="N",
                       help="frames per encode slice after the first frame (default 4)")
        p.add_argument("--decode-latents", type=int, default=1, metavar="N",
                       help="latent frames per decode slice (default 1)")
        p.add_argument("--scheme", choices=("streaming", "shared"), default="streaming",
                       help="slice scheme: exact causal streaming or the paper's feature sharing")
        p.add_argument("--tile", action="store_true", help="tile large frames spatially")
        p.add_argument("--tile-size", type=int, default=384, metavar="PX", help="tile size in pixels (384)")
        p.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction (0.25)")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def video_in(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-frames", type=int, default=None, metavar="N",
                       help="read at most N frames (then trimmed to 1 + 4k)")
        p.add_argument("--size", type=_parse_size, default=None, metavar="WxH|S",
                       help="resize to WIDTHxHEIGHT, or shorter side S; rounded down to a multiple of 8 "
                            "(default: the video's size rounded down to a multiple of 8)")

    p = sub.add_parser("encode", help="video file -> latents.safetensors")
    p.add_argument("video", type=Path)
    p.add_argument("latents", type=Path)
    p.add_argument("--sample", action="store_true", help="store a posterior sample instead of its mean")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample")
    common(p)
    video_in(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="latents.safetensors -> video file")
    p.add_argument("latents", type=Path)
    p.add_argument("video", type=Path)
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: from the latents file)")
    p.add_argument("--keep-size", action="store_true",
                   help="write the decoded size instead of restoring the original video size")
    common(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("roundtrip", help="encode + decode a video, write it, print PSNR / SSIM")
    p.add_argument("video", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--keep-size", action="store_true",
                   help="write the decoded size instead of restoring the original video size")
    common(p)
    video_in(p)
    p.set_defaults(func=cmd_roundtrip)
    return parser


# ----------------------------------------------------------------------------- model


def _device(name: str | None) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as e:
        raise CLIError(f"--device: {e}") from None


def load_model(args: argparse.Namespace):
    """Load the SliceVAE named by ``--model`` and apply the slicing/tiling options."""
    path = Path(args.model)
    if not path.exists():
        raise CLIError(f"{path}: model folder does not exist")
    try:
        vae = SliceVAE.from_pretrained(path)
    except (WeightsFileError, NotADirectoryError, FileNotFoundError) as e:  # these name the file and the problem
        raise CLIError(f"cannot load the model: {e}") from e
    except (OSError, ValueError, KeyError) as e:
        raise CLIError(f"{path}: cannot load the model ({type(e).__name__}: {e})") from e
    vae = vae.to(device=_device(args.device), dtype=DTYPES[args.dtype]).eval()
    if args.no_slicing:
        vae.disable_slicing()
    else:
        tc = getattr(vae.config, "temporal_compression", 4)
        if args.slice_frames < 1 or args.slice_frames % tc:
            raise CLIError(f"--slice-frames {args.slice_frames}: must be a positive multiple of {tc} "
                           "(frames per latent)")
        if args.decode_latents < 1:
            raise CLIError(f"--decode-latents {args.decode_latents}: must be >= 1")
        vae.enable_slicing(encode_frames=args.slice_frames, decode_latents=args.decode_latents,
                           scheme=args.scheme)
    if args.tile:
        vae.enable_tiling(tile_size=args.tile_size, overlap=args.overlap)
    else:
        vae.disable_tiling()
    return vae


def _model_config(vae) -> dict[str, Any]:
    cfg = vae.config
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)


def _module_device_dtype(vae) -> tuple[torch.device, torch.dtype]:
    p = next(vae.parameters())
    return p.device, p.dtype


@contextmanager
def _progress(vae, what: str, enabled: bool):
    """A tqdm bar over the temporal slices, driven by the model's ``progress_callback(done, total)``."""
    if not enabled:
        yield
        return
    tqdm = _need("tqdm").tqdm
    # On a terminal the bar redraws in place; in a log (CI, a redirected run) every redraw is a new line,
    # so there it updates at most every 30 s.
    interval = 0.1 if sys.stderr.isatty() else 30.0
    bar = tqdm(desc=what, unit="slice", leave=False, file=sys.stderr, mininterval=interval)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    previous, vae.progress_callback = vae.progress_callback, update
    try:
        yield
    finally:
        vae.progress_callback = previous
        bar.close()


def encode_video(vae, video: torch.Tensor, args: argparse.Namespace, sample: bool = False,
                 seed: int = 0) -> torch.Tensor:
    """``(1, 3, F, H, W)`` in [-1, 1] -> latents ``(1, C, 1 + (F-1)/4, H/8, W/8)`` float32 on the CPU."""
    device, dtype = _module_device_dtype(vae)
    x = video.to(device=device, dtype=dtype)
    with torch.inference_mode(), _progress(vae, "encode", not args.no_progress):
        posterior = vae.encode(x)
        if sample:
            gen = torch.Generator(device=device).manual_seed(seed)
            latents = posterior.sample(gen)
        else:
            latents = posterior.mode()
    return latents.float().cpu()


def decode_latents(vae, latents: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    """latents ``(1, C, T, h, w)`` -> video ``(1, 3, 1 + 4(T-1), 8h, 8w)`` float32 in [-1, 1] on the CPU."""
    device, dtype = _module_device_dtype(vae)
    z = latents.to(device=device, dtype=dtype)
    with torch.inference_mode(), _progress(vae, "decode", not args.no_progress):
        video = vae.decode(z)
    return video.float().clamp(-1, 1).cpu()


# ----------------------------------------------------------------------------- video pre/post-processing


def _round8(v: float) -> int:
    return max(8, int(v) // 8 * 8)


def target_size(width: int, height: int, size: tuple[int, int] | int | None) -> tuple[int, int]:
    """The model's (W, H): ``size`` (WxH, or shorter side) or the input size, rounded down to multiples of 8."""
    if size is None:
        return _round8(width), _round8(height)
    if isinstance(size, tuple):
        return _round8(size[0]), _round8(size[1])
    scale = size / min(width, height)
    return _round8(round(width * scale)), _round8(round(height * scale))


def resize_video(video: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize ``(B, C, F, H, W)`` frames to ``(height, width)`` (bilinear, antialiased when shrinking)."""
    b, c, f, h, w = video.shape
    if (h, w) == (height, width):
        return video
    frames = video.transpose(1, 2).reshape(b * f, c, h, w)
    out = torch.nn.functional.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False,
                                          antialias=height < h or width < w)
    return out.reshape(b, f, c, height, width).transpose(1, 2)


def load_video(path: Path, args: argparse.Namespace) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read a video file into ``(1, 3, 1 + 4k, H8, W8)`` in [-1, 1] plus metadata for the latents file."""
    _need("av")
    _need("numpy")
    if args.max_frames is not None and args.max_frames < 1:
        raise CLIError("--max-frames must be >= 1")
    frames, fps = read_video(path, max_frames=args.max_frames)
    n, height, width, _ = frames.shape
    keep = 1 + (n - 1) // 4 * 4  # trim to 1 + 4k frames
    width8, height8 = target_size(width, height, args.size)
    if keep != n:
        _note(f"{path}: using the first {keep} of {n} frames (SliceVAE needs 1 + 4k frames)")
    asked = args.size if isinstance(args.size, tuple) else (width, height) if args.size is None else None
    if asked is not None and asked != (width8, height8):
        _note(f"{path}: the model sees {width8}x{height8} instead of {asked[0]}x{asked[1]} "
              "(SliceVAE needs multiples of 8)")
    video = frames_to_tensor(frames[:keep])[None]
    video = resize_video(video, width8, height8)
    meta = {"fps": float(fps), "source": str(path), "source_frames": n, "num_frames": keep,
            "original_width": width, "original_height": height, "width": width8, "height": height8}
    return video, meta


def save_video(path: Path, video: torch.Tensor, fps: float, size: tuple[int, int] | None = None) -> None:
    """Write ``(1, 3, F, H, W)`` in [-1, 1] to ``path``, resized to ``size=(W, H)`` (made even) if given."""
    _need("av")
    _need("numpy")
    if size is not None:
        gif = path.suffix.lower() == ".gif"
        w, h = size if gif else (max(2, v // 2 * 2) for v in size)  # yuv420p needs even sizes
        if (w, h) != tuple(size):
            _note(f"{path}: written at {w}x{h} instead of {size[0]}x{size[1]} (H.264 needs even sizes)")
        video = resize_video(video, w, h).clamp(-1, 1)
    write_video(path, tensor_to_frames(video[0]), fps=fps)


# ----------------------------------------------------------------------------- latents file


def save_latents(path: Path, latents: torch.Tensor, meta: dict[str, Any], model_config: dict[str, Any]) -> None:
    """Write latents and metadata to a safetensors file atomically (temp file + rename)."""
    header = {"format": LATENTS_FORMAT, "model_config": json.dumps(model_config, default=str)}
    header |= {k: json.dumps(v) for k, v in meta.items()}
    atomic_write(path, lambda tmp: save_file({"latents": latents.contiguous()}, str(tmp), metadata=header))


def load_latents(path: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read ``(latents, metadata)`` written by :func:`save_latents`; metadata values are JSON-decoded."""
    if not path.is_file():
        raise CLIError(f"{path}: latents file does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if "latents" not in f.keys():
                raise CLIError(f"{path}: no 'latents' tensor in the file (keys: {sorted(f.keys())})")
            latents = f.get_tensor("latents")
    except CLIError:
        raise
    except Exception as e:  # safetensors raises SafetensorError / OSError for malformed files
        raise CLIError(f"{path}: not a readable safetensors latents file ({type(e).__name__}: {e})") from e
    meta: dict[str, Any] = {}
    for k, v in header.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise CLIError(f"{path}: latents must have shape (1, C, T, h, w), got {tuple(latents.shape)}")
    return latents.float(), meta


def _check_channels(vae, latents: torch.Tensor, path: Path) -> None:
    expected = getattr(vae.config, "latent_channels", None)
    if expected is not None and latents.shape[1] != expected:
        raise CLIError(f"{path}: latents have {latents.shape[1]} channels but the model expects {expected}")


# ----------------------------------------------------------------------------- commands


def _say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr if args.command != "roundtrip" else sys.stdout)


def cmd_encode(args: argparse.Namespace) -> int:
    _refuse_overwrite(args.latents, args.video, *_model_files(args))
    video, meta = load_video(args.video, args)
    vae = load_model(args)
    t0 = time.perf_counter()
    latents = encode_video(vae, video, args, sample=args.sample, seed=args.seed)
    save_latents(args.latents, latents, meta | {"sampled": bool(args.sample)}, _model_config(vae))
    _say(args, f"encoded {args.video} ({meta['num_frames']} frames, {meta['width']}x{meta['height']}) -> "
               f"{args.latents} latents {tuple(latents.shape)} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    _refuse_overwrite(args.video, args.latents, *_model_files(args))
    _check_video_output(args.video)
    if args.fps is not None and not (0 < args.fps < float("inf")):
        raise CLIError(f"--fps {args.fps}: must be a positive number")
    latents, meta = load_latents(args.latents)
    vae = load_model(args)
    _check_channels(vae, latents, args.latents)
    t0 = time.perf_counter()
    video = decode_latents(vae, latents, args)
    fps = args.fps or float(meta.get("fps", 24.0))
    size = None
    if not args.keep_size and "original_width" in meta and "original_height" in meta:
        size = (int(meta["original_width"]), int(meta["original_height"]))
    save_video(args.video, video, fps, size)
    _say(args, f"decoded {args.latents} -> {args.video} ({video.shape[2]} frames) in "
               f"{time.perf_counter() - t0:.1f}s")
    return 0


def cmd_roundtrip(args: argparse.Namespace) -> int:
    _refuse_overwrite(args.output, args.video, *_model_files(args))
    _check_video_output(args.output)
    video, meta = load_video(args.video, args)
    vae = load_model(args)
    t0 = time.perf_counter()
    latents = encode_video(vae, video, args)
    out = decode_latents(vae, latents, args)
    seconds = time.perf_counter() - t0
    if out.shape != video.shape:
        raise CLIError(f"model returned video {tuple(out.shape)} for input {tuple(video.shape)}")
    size = None if args.keep_size else (meta["original_width"], meta["original_height"])
    save_video(args.output, out, meta["fps"], size)
    p = psnr(video, out).mean().item()
    s = ssim(video, out).mean().item()
    print(f"{args.video}: {meta['num_frames']} frames {meta['width']}x{meta['height']}  "
          f"PSNR {p:.2f} dB  SSIM {s:.4f}  ({seconds:.1f}s) -> {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ea-vae`` console script; returns the exit code (2 for bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, VideoReadError) as e:
        print(f"ea-vae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # the model's input checks (frame counts, sizes) speak to the user
        print(f"ea-vae {args.command}: error: {e}", file=sys.stderr)
        return 2
