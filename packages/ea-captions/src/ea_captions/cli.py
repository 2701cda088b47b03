"""Command line: ``ea-captions`` (or ``python -m ea_captions``).

Caption the kept clips of an ``ea_data`` manifest (fills ``caption``) or the samples of WebDataset
shards (rewrites each json's ``caption``):

    ea-captions manifest.jsonl --backend qwen2vl --model Qwen/Qwen2-VL-7B-Instruct --num-frames 8 \\
        --batch-size 8 --dtype bfloat16 --max-new-tokens 200
    ea-captions shards/ --shards --output-dir captioned/ --backend llava \\
        --model llava-hf/llava-onevision-qwen2-7b-ov-hf --fps 1
    ea-captions manifest.jsonl --backend metadata --metadata data/metadata.jsonl

Runs are resumable: start the same command again after an interruption and it continues from its
work log; captions already present are kept unless ``--overwrite``. Per-clip problems (unreadable
clip, degenerate caption) are stored in ``caption_error`` and counted in the summary at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ea_captions.captioner import GenerationSettings
from ea_captions.metadata import MetadataCaptioner
from ea_captions.postprocess import PostprocessConfig
from ea_captions.run import caption_manifest, caption_shards, expand_shards
from ea_captions.sampling import FrameSampling

EPILOG = __doc__.split("\n\n", 1)[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ea-captions", description="Caption video clips and images with vision-language models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="a manifest .jsonl, or with --shards: tar files / folders of them")
    p.add_argument("--shards", action="store_true", help="inputs are WebDataset tar shards (default: a manifest)")
    p.add_argument("--output", help="manifest mode: write the captioned manifest here (default: in place)")
    p.add_argument("--output-dir", help="shard mode: write captioned shards here (default: replace in place)")
    p.add_argument("--root", help="manifest mode: folder the records' `source` paths are relative to "
                                  "(default: the manifest's folder)")
    p.add_argument("--log", help="work log for resuming (default: next to the output)")

    m = p.add_argument_group("captioner")
    m.add_argument("--backend", choices=["auto", "qwen2vl", "llava", "metadata"], default="auto",
                   help="model family; auto picks it from the model's config (default auto)")
    m.add_argument("--model", help="Hugging Face model id or local folder (qwen2vl / llava / auto)")
    m.add_argument("--metadata", help="metadata .jsonl with per-file captions (--backend metadata)")
    m.add_argument("--prompt", default="detailed",
                   help="prompt template name (detailed, short, motion) or a literal prompt; may use "
                        "{duration} and {num_frames} (default detailed)")
    m.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16 (default auto)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    m.add_argument("--attn-implementation", help="e.g. sdpa, flash_attention_2, eager")

    s = p.add_argument_group("frame sampling")
    s.add_argument("--num-frames", type=int, default=8, help="frames per clip, uniformly spaced (default 8)")
    s.add_argument("--fps", type=float, help="sample this many frames per second instead of --num-frames")
    s.add_argument("--max-frames", type=int, default=64, help="cap on frames per clip with --fps (default 64)")

    g = p.add_argument_group("generation")
    g.add_argument("--batch-size", type=int, default=8, help="clips per generate call (default 8)")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=0.7, help="with --sample (default 0.7)")
    g.add_argument("--top-p", type=float, default=0.9, help="with --sample (default 0.9)")
    g.add_argument("--repetition-penalty", type=float, default=1.05)
    g.add_argument("--num-beams", type=int, default=1)
    g.add_argument("--seed", type=int, default=0, help="random seed for --sample (default 0)")

    c = p.add_argument_group("post-processing")
    c.add_argument("--min-words", type=int, default=3)
    c.add_argument("--max-words", type=int, default=300)
    c.add_argument("--keep-boilerplate", action="store_true", help="do not strip 'The video shows' openings")
    c.add_argument("--keep-truncated", action="store_true",
                   help="accept captions cut by --max-new-tokens mid-sentence")

    r = p.add_argument_group("run")
    r.add_argument("--overwrite", action="store_true", help="recaption clips that already have a caption")
    r.add_argument("--retry-errors", action="store_true", help="recaption clips whose caption_error is set")
    r.add_argument("--save-every", type=int, default=50,
                   help="manifest mode: rewrite the manifest every N batches (0: only at the end)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def make_captioner(args: argparse.Namespace):
    """The captioner the arguments ask for (loads the model)."""
    if args.backend == "metadata":
        if not args.metadata:
            raise SystemExit("ea-captions: --backend metadata needs --metadata PATH")
        return MetadataCaptioner(args.metadata)
    if not args.model:
        raise SystemExit(f"ea-captions: --backend {args.backend} needs --model PATH_OR_ID")
    from ea_captions.vlm import VLMCaptioner  # torch + the transformers backend: only when asked for

    gen = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                             temperature=args.temperature, top_p=args.top_p,
                             repetition_penalty=args.repetition_penalty, num_beams=args.num_beams)
    return VLMCaptioner.from_pretrained(args.model, backend=args.backend, dtype=args.dtype, device=args.device,
                                        generation=gen, prompt=args.prompt,
                                        attn_implementation=args.attn_implementation)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sampling = FrameSampling(num_frames=args.num_frames, fps=args.fps, max_frames=args.max_frames)
        post = PostprocessConfig(min_words=args.min_words, max_words=args.max_words,
                                 strip_boilerplate=not args.keep_boilerplate,
                                 reject_truncated=not args.keep_truncated)
        if args.shards:
            if args.output:
                raise ValueError("--output is for manifests; use --output-dir with --shards")
            shards = expand_shards(args.inputs)
        else:
            if len(args.inputs) != 1 or args.output_dir:
                raise ValueError("manifest mode takes one manifest and --output (not --output-dir)")
            if not Path(args.inputs[0]).is_file():
                raise FileNotFoundError(f"{args.inputs[0]}: manifest file does not exist")
        if args.sample:
            torch.manual_seed(args.seed)
        captioner = make_captioner(args)
        common = dict(sampling=sampling, batch_size=args.batch_size, postprocess=post, overwrite=args.overwrite,
                      retry_errors=args.retry_errors, log_path=args.log, progress=not args.no_progress)
        if args.shards:
            summary = caption_shards(shards, captioner, output_dir=args.output_dir, **common)
        else:
            summary = caption_manifest(args.inputs[0], captioner, output=args.output, root=args.root,
                                       save_every=args.save_every, **common)
    except (ValueError, OSError) as e:
        print(f"ea-captions: error: {e}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
