"""The metadata captioner assigns each clip the caption of the scene it overlaps most."""

import pytest

from ea_captions.captioner import Clip
from ea_captions.metadata import MetadataCaptioner, best_scene

SCENES = [{"start_time": 0.0, "end_time": 2.0, "caption": "one"},
          {"start_time": 2.0, "end_time": 5.0, "caption": "two"},
          {"start_time": 5.0, "end_time": 6.0, "caption": "three"}]


@pytest.mark.parametrize("start, end, expected", [
    (0.0, 2.0, "one"),
    (0.5, 1.0, "one"),
    (1.5, 3.0, "two"),     # 0.5 s in scene one, 1 s in scene two
    (1.0, 3.0, "one"),     # 1 s each: the tie goes to the earlier scene
    (4.5, 6.0, "three"),   # 0.5 s vs 1 s
    (0.0, 6.0, "two"),     # covers everything: the longest scene
    (2.5, 2.5, "two"),     # zero length: the scene containing it
    (7.0, 8.0, None),      # after the video
])
def test_best_scene(start, end, expected):
    s = best_scene(SCENES, start, end)
    assert (s["caption"] if s else None) == expected


def test_metadata_captioner_on_synthetic_data(synthetic_data):
    root, records = synthetic_data
    cap = MetadataCaptioner(root / "metadata.jsonl")
    assert cap.needs_frames is False
    clips, expected = [], []
    for r in records:
        if r["type"] == "image":
            clips.append(Clip(r["file"], is_image=True, source=str(root / r["file"])))  # absolute path
            expected.append(r["caption"])
            continue
        for s in r["scenes"]:
            clips.append(Clip("x", source=r["file"], start_time=s["start_time"], end_time=s["end_time"]))
            expected.append(s["caption"])
        a, b = r["scenes"][0], r["scenes"][1]
        # 3 frames before the cut and 9 after: the second scene's caption
        clips.append(Clip("y", source=r["file"], start_time=a["end_time"] - 3 / r["fps"],
                          end_time=b["start_time"] + 9 / r["fps"]))
        expected.append(b["caption"])
    results = cap.caption(clips)
    assert [r.text for r in results] == expected
    assert all(r.error is None and r.finished for r in results)
    # every scene has its own caption, so a wrong assignment cannot pass by accident
    scene_captions = [s["caption"] for r in records if r["type"] == "video" for s in r["scenes"]]
    assert len(set(scene_captions)) == len(scene_captions)


def test_metadata_captioner_errors(synthetic_data, tmp_path):
    root, records = synthetic_data
    cap = MetadataCaptioner(root / "metadata.jsonl")
    video = next(r for r in records if r["type"] == "video")
    missing, outside = cap.caption([Clip("m", source="videos/nope.mp4"),
                                    Clip("o", source=video["file"], start_time=100.0, end_time=101.0)])
    assert missing.text == "" and "no metadata" in missing.error and "nope.mp4" in missing.error
    assert outside.text == "" and "overlaps" in outside.error
    bad = tmp_path / "meta.jsonl"
    bad.write_text('{"type": "video"}\n')
    with pytest.raises(ValueError, match="meta.jsonl:1"):
        MetadataCaptioner(bad)
