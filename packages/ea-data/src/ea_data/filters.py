"""Filter stage: keep or reject clips from their stored scores (no decoding, no re-scoring).

Thresholds follow the paper and the reference preprocessing: clips whose OCR text covers more than 1 %
of the frame are removed, the motion score must lie in a band (static clips and shaky/cut-heavy clips
are both bad training data) and the aesthetic score must reach a floor. A threshold applies only when
its score was computed: a scorer left out of a run (`None` score) never rejects a clip.

Reasons, checked in this order so the reported reason is deterministic: ``"text_area"``,
``"motion_low"``, ``"motion_high"``, ``"aesthetic_low"``. Rejections made by the split stage
(``"too_short"``, ``"too_long"``) and error records are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ea_core.files import FRACTION, check_fields

#: Reasons the filter stage can give; the split stage adds its own (see `ea_data.curation`).
FILTER_REASONS = ("text_area", "motion_low", "motion_high", "aesthetic_low")


@dataclass
class FilterConfig:
    """Score thresholds. `None` disables a bound.

    `max_text_area` is a fraction of the frame (0.01 = 1 %), a clip is rejected when its text area is
    strictly greater. `min_motion` / `max_motion` are in the motion scorer's unit: mean optical-flow
    magnitude (camera shake removed) in pixels per sampled-frame step at the scorer's working resolution,
    shorter side 256 by default (see `ea_data.scoring.motion`).
    `min_aesthetic` is on the aesthetic predictor's 1..10 scale.
    """

    max_text_area: float | None = 0.01
    min_motion: float | None = 2.0
    max_motion: float | None = 20.0
    min_aesthetic: float | None = 4.0

    def __post_init__(self):
        check_fields(self, {"max_text_area": FRACTION})  # numbers or None; text area a fraction of the frame
        if self.min_motion is not None and self.max_motion is not None and self.min_motion > self.max_motion:
            raise ValueError(f"min_motion {self.min_motion} is above max_motion {self.max_motion}")


def apply_filters(record: dict[str, Any], cfg: FilterConfig | None = None) -> tuple[str, str | None]:
    """Decide one scored clip: returns `(status, reject_reason)`, `("kept", None)` when it passes.

    Records that are errors, or were rejected before scoring (too short / too long), keep their
    status and reason; everything else is (re)decided from the scores alone, so calling this again
    with other thresholds re-filters a manifest.
    """
    cfg = cfg or FilterConfig()
    status, reason = record.get("status"), record.get("reject_reason")
    if status == "error":
        return "error", None
    if status == "rejected" and reason not in FILTER_REASONS:
        return "rejected", reason
    if record.get("type", "video") == "image":
        checks = _checks(record, cfg, motion=False)
    else:
        checks = _checks(record, cfg, motion=True)
    for failed, why in checks:
        if failed:
            return "rejected", why
    return "kept", None


def _checks(r: dict[str, Any], cfg: FilterConfig, motion: bool):
    text, mot, aes = r.get("text_area"), r.get("motion_score"), r.get("aesthetic_score")
    yield (cfg.max_text_area is not None and text is not None and text > cfg.max_text_area), "text_area"
    if motion:
        yield (cfg.min_motion is not None and mot is not None and mot < cfg.min_motion), "motion_low"
        yield (cfg.max_motion is not None and mot is not None and mot > cfg.max_motion), "motion_high"
    yield (cfg.min_aesthetic is not None and aes is not None and aes < cfg.min_aesthetic), "aesthetic_low"


def filter_records(records: Iterable[dict[str, Any]], cfg: FilterConfig | None = None) -> list[dict[str, Any]]:
    """Re-filter manifest records: copies with `status` / `reject_reason` set by :func:`apply_filters`.

    A clip that is no longer kept loses its `shard` / `key` (the shards must be rewritten, e.g. with
    `ea-data shard`, for a changed filter to reach the training data).
    """
    out = []
    for r in records:
        status, reason = apply_filters(r, cfg)
        new = {**r, "status": status, "reject_reason": reason}
        if status != "kept":
            new["shard"] = new["key"] = None
        out.append(new)
    return out
