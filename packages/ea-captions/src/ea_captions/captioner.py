"""The captioner interface: a batch of clips in, one :class:`CaptionResult` per clip out.

Every backend (the transformers vision-language models in :mod:`ea_captions.vlm`, the source
metadata in :mod:`ea_captions.metadata`) implements :class:`Captioner`:

    results = captioner.caption([Clip("clip-0", frames, fps=2.0), Clip("img-1", image[None], is_image=True)])
    results[0].text, results[0].finished, results[0].error

A captioner returns the model's raw text; :func:`ea_captions.postprocess.clean_caption` decides
whether it is usable. `finished` tells it whether generation ended on its own (end-of-sequence
token) or was cut by `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ea_core.files import POSITIVE, check_fields


@dataclass
class Clip:
    """A clip (or an image) to caption.

    `frames`: `(F, H, W, 3)` uint8 RGB, already sampled (an image is `F = 1` with `is_image=True`).
    `fps`: the rate of the sampled frames (frames per second of `frames`, not of the source), used by
    models that encode time (Qwen2.5-VL). `source`, `start_time`, `end_time` (seconds) say where the
    clip comes from; the metadata captioner needs them, model backends ignore them.
    """

    clip_id: str
    frames: np.ndarray | None = None
    fps: float = 1.0
    is_image: bool = False
    source: str = ""
    start_time: float = 0.0
    end_time: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.frames is not None:
            f = self.frames
            if not isinstance(f, np.ndarray) or f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
                desc = f"{f.shape} {f.dtype}" if isinstance(f, np.ndarray) else type(f).__name__
                raise ValueError(f"clip {self.clip_id}: frames must be an (F, H, W, 3) uint8 array, got {desc}")
            if f.shape[0] == 0:
                raise ValueError(f"clip {self.clip_id}: has no frames")
            if self.is_image and f.shape[0] != 1:
                raise ValueError(f"clip {self.clip_id}: an image has 1 frame, got {f.shape[0]}")


@dataclass
class CaptionResult:
    """The raw caption of one clip.

    `text`: the generated text (special tokens removed, not yet post-processed); `finished`: whether
    generation stopped on its own rather than at `max_new_tokens`; `error`: why no caption could be
    produced (then `text` is empty).
    """

    clip_id: str
    text: str = ""
    finished: bool = True
    error: str | None = None
    num_tokens: int = 0


@runtime_checkable
class Captioner(Protocol):
    """Anything with `caption(clips) -> list[CaptionResult]` (same order and length as `clips`).

    `name` identifies the backend and model in the records it fills (e.g. ``"qwen2vl:/models/x"``).
    `needs_frames` is False for captioners that do not look at pixels (the metadata captioner), so
    callers can skip decoding.
    """

    name: str
    needs_frames: bool

    def caption(self, clips: Sequence[Clip]) -> list[CaptionResult]: ...


@dataclass
class GenerationSettings:
    """Text generation settings passed to `model.generate`.

    Greedy decoding (`do_sample=False`, `num_beams=1`) is deterministic and the default: captions of
    a data set should not depend on a random seed. `temperature` and `top_p` only apply when sampling.
    """

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.05
    num_beams: int = 1

    def __post_init__(self):
        check_fields(self, {"max_new_tokens": POSITIVE, "num_beams": POSITIVE})
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {self.temperature}, "
                             f"{self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    def generate_kwargs(self) -> dict:
        """Keyword arguments for `model.generate` (sampling knobs only when sampling)."""
        kw = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample, "num_beams": self.num_beams,
              "repetition_penalty": self.repetition_penalty}
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw
