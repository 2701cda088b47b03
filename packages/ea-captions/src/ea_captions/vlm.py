"""Captioning backends on transformers' vision-language models that take video.

Two families, chosen by the model's ``config.json`` (``model_type``) or by name:

- ``qwen2vl``: Qwen2-VL, Qwen2.5-VL, Qwen3-VL (e.g. ``Qwen/Qwen2.5-VL-7B-Instruct``). The sampled frames
  go to the processor as a video with their frame rate, so models that encode absolute time
  (Qwen2.5-VL's `second_per_grid_ts`) see the right time scale.
- ``llava``: LLaVA-OneVision and LLaVA-NeXT-Video (e.g. ``llava-hf/llava-onevision-qwen2-7b-ov-hf``).
  These stack a batch's videos into one tensor, so clips are batched by frame count.

Both run through `AutoProcessor` + `AutoModelForImageTextToText` and the processor's chat template
(``{"type": "video"}`` / ``{"type": "image"}`` content followed by the prompt text), with left
padding so that a batch generates exactly what each clip would generate alone:

    # model: a local folder, or a hub id such as Qwen/Qwen2-VL-2B-Instruct where the hub is reachable
    captioner = VLMCaptioner.from_pretrained(model, dtype="bfloat16", device="cuda",
                                            generation=GenerationSettings(max_new_tokens=200))
    results = captioner.caption(clips)   # list[CaptionResult], raw text + whether generation finished
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ea_captions.captioner import CaptionResult, Clip, GenerationSettings
from ea_captions.prompts import render_prompt
from ea_core.devices import resolve_device, resolve_dtype


@dataclass(frozen=True)
class VLMFamily:
    """What differs between model families: which `model_type`s belong to it and how it batches.

    `same_frame_count`: videos of one batch must have the same number of frames (stacked tensor).
    """

    name: str
    model_types: tuple[str, ...]
    same_frame_count: bool


FAMILIES = {
    "qwen2vl": VLMFamily("qwen2vl", ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"), same_frame_count=False),
    "llava": VLMFamily("llava", ("llava_onevision", "llava_next_video"), same_frame_count=True),
}


def family_of(model_type: str) -> str | None:
    """The backend name for a transformers `model_type`, or None if no family supports it."""
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam.name
    return None


class VLMCaptioner:
    """Caption clips with a transformers vision-language model (see the module docstring).

    `model` and `processor` are a loaded `...ForConditionalGeneration` and its processor; use
    :meth:`from_pretrained` to load them from a model id or a local folder.
    """

    needs_frames = True

    def __init__(self, model, processor, backend: str, generation: GenerationSettings | None = None,
                 prompt: str = "detailed", name: str | None = None):
        if backend not in FAMILIES:
            raise ValueError(f"unknown VLM backend {backend!r}; choose one of {sorted(FAMILIES)}")
        self.family = FAMILIES[backend]
        self.model = model.eval()
        self.processor = processor
        self.generation = generation or GenerationSettings()
        self.prompt = prompt
        self.name = name or f"{backend}:{getattr(model.config, '_name_or_path', '') or model.config.model_type}"
        tok = processor.tokenizer
        # Left padding: every prompt ends right where generation starts, so a padded batch continues each
        # prompt exactly as it would alone (the attention mask hides the pad tokens).
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_token_ids = sorted({*eos, *([tok.eos_token_id] if tok.eos_token_id is not None else [])})
        if not self.eos_token_ids:
            raise ValueError(f"{self.name}: neither the generation config nor the tokenizer defines an "
                             "end-of-sequence token")

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike, backend: str = "auto", dtype: str | torch.dtype = "auto",
                        device: str = "auto", generation: GenerationSettings | None = None,
                        prompt: str = "detailed", attn_implementation: str | None = None) -> VLMCaptioner:
        """Load processor and model from a Hugging Face model id or a local folder.

        `backend` ``"auto"`` picks the family from the config's `model_type`; naming a family checks that
        the model belongs to it.
        """
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        model = str(model)
        try:
            config = AutoConfig.from_pretrained(model)
        except (OSError, ValueError) as e:
            raise ValueError(f"{model}: cannot load a model config ({e})") from None
        detected = family_of(config.model_type)
        if backend == "auto":
            if detected is None:
                raise ValueError(f"{model}: model_type {config.model_type!r} is not a supported video "
                                 f"captioning model; supported: {_supported()}")
            backend = detected
        elif backend not in FAMILIES:
            raise ValueError(f"unknown VLM backend {backend!r}; choose one of {sorted(FAMILIES)}")
        elif detected != backend:
            raise ValueError(f"{model}: model_type {config.model_type!r} does not belong to backend "
                             f"{backend!r} (which supports {FAMILIES[backend].model_types})")
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        processor = AutoProcessor.from_pretrained(model)
        kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
        net = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype, **kw).to(dev)
        return cls(net, processor, backend, generation, prompt, name=f"{backend}:{model}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _messages(self, clip: Clip) -> list[dict]:
        duration = clip.frames.shape[0] / clip.fps if clip.fps > 0 else 0.0
        text = render_prompt(self.prompt, clip.is_image, duration, clip.frames.shape[0])
        media = {"type": "image" if clip.is_image else "video"}
        return [{"role": "user", "content": [media, {"type": "text", "text": text}]}]

    def _groups(self, clips: Sequence[Clip]) -> list[list[int]]:
        """Indices of clips that can share one `generate` call (same modality, and frame count if needed)."""
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(clips):
            key = (c.is_image, c.frames.shape[0] if self.family.same_frame_count else 0)
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _inputs(self, clips: Sequence[Clip]):
        texts = [self.processor.apply_chat_template(self._messages(c), tokenize=False, add_generation_prompt=True)
                 for c in clips]
        kw = {}
        if clips[0].is_image:
            kw["images"] = [c.frames[0] for c in clips]
        else:
            kw["videos"] = [c.frames for c in clips]
            # The frames are already sampled: the processor must take all of them, at this rate.
            kw["video_metadata"] = [{"fps": c.fps, "total_num_frames": c.frames.shape[0],
                                     "height": c.frames.shape[1], "width": c.frames.shape[2]} for c in clips]
            kw["do_sample_frames"] = False
        inputs = self.processor(text=texts, padding=True, return_tensors="pt", **kw)
        dtype = next(self.model.parameters()).dtype
        return {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in inputs.items() if isinstance(v, torch.Tensor)}

    @torch.inference_mode()
    def caption(self, clips: Sequence[Clip]) -> list[CaptionResult]:
        """Caption `clips` (frames already sampled); returns raw texts in the same order."""
        for c in clips:
            if c.frames is None:
                raise ValueError(f"clip {c.clip_id}: {self.name} needs frames, got none")
        results: list[CaptionResult | None] = [None] * len(clips)
        for group in self._groups(clips):
            sub = [clips[i] for i in group]
            inputs = self._inputs(sub)
            out = self.model.generate(**inputs, **self.generation.generate_kwargs(),
                                      pad_token_id=self.processor.tokenizer.pad_token_id,
                                      eos_token_id=self.eos_token_ids)
            new = out[:, inputs["input_ids"].shape[1]:].cpu()
            texts = self.processor.tokenizer.batch_decode(new, skip_special_tokens=True)
            is_eos = torch.isin(new, torch.tensor(self.eos_token_ids))
            for row, (i, text) in enumerate(zip(group, texts, strict=True)):
                hits = is_eos[row].nonzero()
                finished = len(hits) > 0
                n = int(hits[0]) + 1 if finished else new.shape[1]
                results[i] = CaptionResult(clips[i].clip_id, text.strip(), finished=finished, num_tokens=n)
        return results


def _supported() -> str:
    return ", ".join(f"{f.name}: {'/'.join(f.model_types)}" for f in FAMILIES.values())
