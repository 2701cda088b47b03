"""Filter decisions from stored scores, checked against hand-written expectations."""

import pytest

from ea_data.filters import FilterConfig, apply_filters, filter_records
from ea_data.manifest import new_record


def clip(**scores):
    return new_record("v.mp4", start_frame=0, end_frame=40, status="pending", **scores)


def test_thresholds_and_boundaries():
    cfg = FilterConfig()  # text > 1 % rejected, motion in [2, 20], aesthetic >= 4
    assert apply_filters(clip(motion_score=5.0, text_area=0.01, aesthetic_score=4.0), cfg) == ("kept", None)
    assert apply_filters(clip(motion_score=5.0, text_area=0.0101), cfg) == ("rejected", "text_area")
    assert apply_filters(clip(motion_score=1.99), cfg) == ("rejected", "motion_low")
    assert apply_filters(clip(motion_score=20.01), cfg) == ("rejected", "motion_high")
    assert apply_filters(clip(motion_score=2.0), cfg) == ("kept", None)
    assert apply_filters(clip(motion_score=5.0, aesthetic_score=3.9), cfg) == ("rejected", "aesthetic_low")
    # Several failures: the first in the documented order is reported.
    assert apply_filters(clip(motion_score=0.1, text_area=0.5, aesthetic_score=1.0), cfg)[1] == "text_area"
    assert apply_filters(clip(motion_score=0.1, aesthetic_score=1.0), cfg)[1] == "motion_low"


def test_unscored_and_disabled_bounds_never_reject():
    assert apply_filters(clip(), FilterConfig()) == ("kept", None)  # no scorer ran
    off = FilterConfig(max_text_area=None, min_motion=None, max_motion=None, min_aesthetic=None)
    assert apply_filters(clip(motion_score=0.0, text_area=1.0, aesthetic_score=0.0), off) == ("kept", None)
    # Images have no motion; their text and aesthetic scores are filtered.
    img = new_record("p.png", type="image", status="pending", motion_score=None, text_area=0.2)
    assert apply_filters(img, FilterConfig()) == ("rejected", "text_area")
    assert apply_filters(dict(img, text_area=0.0), FilterConfig()) == ("kept", None)


def test_split_rejections_and_errors_are_kept_as_they_are():
    short = clip(motion_score=5.0) | {"status": "rejected", "reject_reason": "too_short"}
    assert apply_filters(short, FilterConfig()) == ("rejected", "too_short")
    err = new_record("bad.mp4", status="error", error="not a video")
    assert apply_filters(err, FilterConfig()) == ("error", None)


def test_refilter_changes_only_decisions():
    recs = [clip(motion_score=m) for m in (0.5, 5.0, 30.0)]
    first = filter_records(recs)
    assert [r["status"] for r in first] == ["rejected", "kept", "rejected"]
    first[1].update(shard="shards/video-000000.tar", key=first[1]["clip_id"])
    again = filter_records(first, FilterConfig(min_motion=0.1, max_motion=10.0))
    assert [(r["status"], r["reject_reason"]) for r in again] == [("kept", None), ("kept", None),
                                                                   ("rejected", "motion_high")]
    assert [r["motion_score"] for r in again] == [0.5, 5.0, 30.0]
    assert again[1]["shard"] == "shards/video-000000.tar"  # still kept: still written
    dropped = filter_records(first, FilterConfig(min_motion=6.0))
    assert dropped[1]["status"] == "rejected" and dropped[1]["shard"] is None and dropped[1]["key"] is None


def test_config_validation():
    with pytest.raises(ValueError, match="fraction"):
        FilterConfig(max_text_area=5.0)
    with pytest.raises(ValueError, match="above max_motion"):
        FilterConfig(min_motion=30.0, max_motion=20.0)
    with pytest.raises(ValueError, match="number or None"):
        FilterConfig(min_aesthetic=float("nan"))
