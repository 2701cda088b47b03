"""ea_captions: caption video clips and images with vision-language models.

- :class:`Captioner` (frames in, raw text out, batched), :class:`Clip`, :class:`CaptionResult`,
  :class:`GenerationSettings` (:mod:`ea_captions.captioner`)
- :class:`VLMCaptioner`: Qwen2-VL / Qwen2.5-VL and LLaVA-OneVision / LLaVA-NeXT-Video backends
  (:mod:`ea_captions.vlm`); :class:`MetadataCaptioner`: captions from source metadata
- :func:`clean_caption`: boilerplate stripping, degenerate-output detection, length bounds
- :func:`caption_manifest`, :func:`caption_shards`: resumable batch runs; CLI ``ea-captions``

The transformers backend is imported lazily (``from ea_captions import VLMCaptioner`` loads it).
"""

from ea_captions.captioner import Captioner, CaptionResult, Clip, GenerationSettings
from ea_captions.metadata import MetadataCaptioner
from ea_captions.postprocess import CleanedCaption, PostprocessConfig, clean_caption
from ea_captions.run import RunSummary, caption_manifest, caption_shards
from ea_captions.sampling import FrameSampling, load_clip, sample_frame_indices

__version__ = "0.1.0"

__all__ = [
    "CaptionResult", "Captioner", "CleanedCaption", "Clip", "FrameSampling", "GenerationSettings",
    "MetadataCaptioner", "PostprocessConfig", "RunSummary", "VLMCaptioner", "caption_manifest",
    "caption_shards", "clean_caption", "load_clip", "sample_frame_indices",
]


def __getattr__(name):
    if name == "VLMCaptioner":  # imports torch + transformers: only when asked for
        from ea_captions.vlm import VLMCaptioner

        return VLMCaptioner
    raise AttributeError(f"module 'ea_captions' has no attribute {name!r}")
