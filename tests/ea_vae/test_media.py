"""Media formats: extension kinds, WebDataset member names (vs webdataset's own split), image decoding errors."""

import io

import numpy as np
import pytest

from ea_vae.media import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    ImageReadError,
    ext_kind,
    media_kind,
    media_member,
    read_image,
    split_sample_name,
)


def test_kinds_by_extension():
    assert not set(VIDEO_EXTS) & set(IMAGE_EXTS)
    assert [media_kind(p) for p in ("a/b.MP4", "x.webm", "y.jpeg", "z.BMP", "notes.txt", "noext")] == [
        "video", "video", "image", "image", None, None]
    assert ext_kind("mp4") == ext_kind(".MOV") == "video" and ext_kind("png") == "image" and ext_kind("json") is None


@pytest.mark.parametrize("name", ["clip_001.mp4", "a/b/clip_001.seg.mp4", "dir.v2/x.JSON", "k.tar.gz"])
def test_sample_names_split_like_webdataset(name):
    wds = pytest.importorskip("webdataset.tariterators")
    key, ext = wds.base_plus_ext(name)
    assert split_sample_name(name) == (key, ext.lower())


def test_media_member_prefers_video_then_image():
    assert media_member({"json", "png", "mp4"}) == "mp4"
    assert media_member({"json", "jpg", "png"}) == "jpg"
    assert media_member({"json", "png", "mp4"}, "image") == "png"
    assert media_member({"json", "txt"}) is None and media_member({"mp4"}, "image") is None


def test_read_image_from_bytes_and_errors_name_the_source(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    out = read_image(buf.getvalue(), "s1")
    assert out.dtype == np.uint8 and out.flags.writeable and np.array_equal(out, rgb)  # png is lossless
    with pytest.raises(ImageReadError, match="sample-7: not a readable image"):
        read_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "sample-7")
    with pytest.raises(OSError, match="missing.png: image file does not exist"):
        read_image(tmp_path / "missing.png")
