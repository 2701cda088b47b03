"""ea-captions on hostile but honest input (issue 13): one unreadable json member in a shard is skipped
and recorded, and every other sample of every shard is still captioned; settings are checked when built."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile

import numpy as np
import pytest
from PIL import Image

from ea_captions.captioner import CaptionResult, GenerationSettings
from ea_captions.postprocess import PostprocessConfig
from ea_captions.run import caption_shards
from ea_captions.sampling import FrameSampling


class _Describe:
    """Captions an image with its mean colour, computed from the decoded pixels the run hands over."""

    name = "describe-colour"
    needs_frames = True

    def caption(self, clips):
        return [CaptionResult(c.clip_id, "an image with mean red level "
                              f"{int(c.frames[..., 0].mean())} and nothing else.") for c in clips]


def _png(red: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), (red, 40, 40), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _members(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_invalid_json_sample_is_skipped_recorded_and_the_run_goes_on(tmp_path):
    meta = json.dumps({"type": "image", "caption": ""}).encode()
    bad_json = b'{"type": "image", "caption": '  # cut off
    _shard(tmp_path / "a.tar", [("s0.png", _png(200)), ("s0.json", meta),
                                ("s1.png", _png(100)), ("s1.json", bad_json),
                                ("s2.png", _png(50)), ("s2.json", b"[1, 2]")])
    _shard(tmp_path / "b.tar", [("t0.png", _png(10)), ("t0.json", meta)])
    out = tmp_path / "out"
    summary = caption_shards([tmp_path / "a.tar", tmp_path / "b.tar"], _Describe(), output_dir=out, progress=False)
    assert summary.captioned == 2 and summary.errors == {"invalid_json": 2} and summary.total == 4
    assert len(summary.skipped) == 2 and "a.tar: sample s1: invalid json member" in summary.skipped[0]
    assert "skipped" in summary.format() and "s2" in summary.format()
    a, b = _members(out / "a.tar"), _members(out / "b.tar")
    assert a["s1.json"] == bad_json and a["s2.json"] == b"[1, 2]"  # left exactly as they were
    assert a["s1.png"] == _png(100)
    assert json.loads(a["s0.json"])["caption"] == "An image with mean red level 200 and nothing else."
    assert json.loads(b["t0.json"])["caption"] == "An image with mean red level 10 and nothing else."
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((out / "a.tar").stat().st_mode) == 0o666 & ~umask  # the user's usual mode


@pytest.mark.parametrize("cls, kwargs, says", [
    (FrameSampling, {"num_frames": "8"}, "FrameSampling.num_frames: expected an integer or None"),
    (FrameSampling, {"max_frames": 0}, "FrameSampling.max_frames: must be > 0"),
    (PostprocessConfig, {"max_word_fraction": 1.5}, "max_word_fraction: must be a fraction in"),
    (PostprocessConfig, {"min_words": 10, "max_words": 5}, "min_words 10 is above max_words 5"),
    (GenerationSettings, {"do_sample": "yes"}, "GenerationSettings.do_sample: expected true or false"),
    (GenerationSettings, {"max_new_tokens": 2.5}, "max_new_tokens: expected an integer"),
])
def test_settings_are_checked_naming_the_key(cls, kwargs, says):
    with pytest.raises(ValueError, match=says):
        cls(**kwargs)
