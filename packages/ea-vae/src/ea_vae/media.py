"""Media formats: which files are videos or images, WebDataset sample names, decoding in-memory media.

The one home of these for every package (`ea_data`'s pipeline, shard writer and loader, `ea_captions`);
video *files* are read and written by :mod:`ea_vae.video_io`. Frames are numpy `(F, H, W, 3)` uint8
RGB, as there. Needs the `video` extra (PyAV, numpy, Pillow).

- :data:`VIDEO_EXTS`, :data:`IMAGE_EXTS`, :func:`ext_kind`, :func:`media_kind`: a file is a video or
  an image by its extension (lower-cased, with the dot);
- :func:`split_sample_name`, :func:`media_member`: WebDataset member names `<key>.<ext>` and which
  member of a sample holds its video or image;
- :func:`decode_video_bytes`, :func:`probe_video_bytes`, :func:`read_image`, :func:`probe_image_bytes`:
  decoding from bytes (a shard member) or, for images, from a file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable

import numpy as np

from ea_vae.video_io import VideoReadError, _av

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".3gp")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class ImageReadError(OSError):
    """An image could not be read or decoded; the message names the file (or sample) and the problem."""


def ext_kind(ext: str) -> str | None:
    """`"video"`, `"image"` or None for an extension, with or without its dot (`"mp4"`, `".JPG"`)."""
    ext = "." + ext.lower().lstrip(".")
    return "video" if ext in VIDEO_EXTS else "image" if ext in IMAGE_EXTS else None


def media_kind(path: str | os.PathLike) -> str | None:
    """`"video"`, `"image"` or None for a file, by its extension only (the content is not looked at)."""
    return ext_kind(os.path.splitext(os.fspath(path))[1])


def split_sample_name(name: str) -> tuple[str, str]:
    """WebDataset naming: `(key, ext)` of a tar member; the key runs to the first dot of the file name.

    `"a/b/clip_001.seg.mp4"` -> `("a/b/clip_001", "seg.mp4")`; the extension is lower-cased.
    """
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def media_member(exts: Iterable[str], kind: str | None = None) -> str | None:
    """The member extension (no dot) of a sample holding its `kind` ("video" / "image"; None: a video,
    else an image), taken in the order of :data:`VIDEO_EXTS` / :data:`IMAGE_EXTS`; None if there is none."""
    present = set(exts)
    kinds = {"video": VIDEO_EXTS, "image": IMAGE_EXTS}
    for k in (kind,) if kind is not None else ("video", "image"):
        for ext in kinds[k]:
            if ext[1:] in present:
                return ext[1:]
    return None


def probe_video_bytes(data: bytes) -> tuple[int, int, int]:
    """`(width, height, num_frames)` of in-memory video bytes, counting packets if the header has no count."""
    with _av().open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        n = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        return stream.codec_context.width, stream.codec_context.height, int(n)


def decode_video_bytes(data: bytes, indices: list[int], name: str = "<bytes>") -> np.ndarray:
    """Decode the frames at `indices` (0-based, presentation order) of in-memory video bytes.

    Returns `(len(indices), H, W, 3)` uint8 RGB; raises :class:`VideoReadError` naming `name` when the
    bytes are not a video or hold too few frames.
    """
    if not data:
        raise VideoReadError(f"{name}: video is empty (0 bytes)")
    wanted = {i: None for i in indices}
    last = max(indices)
    count = 0
    try:
        with _av().open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{name}: contains no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                count = i + 1
                if i in wanted:
                    wanted[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except VideoReadError:
        raise
    except Exception as e:  # PyAV raises many error types for bad data
        raise VideoReadError(f"{name}: not a readable video ({type(e).__name__}: {e})") from e
    if count <= last:
        raise VideoReadError(f"{name}: decoded {count} frames, needs frame {last}")
    return np.stack([wanted[i] for i in indices])


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("image decoding needs Pillow: pip install 'ea-vae[video]'") from e
    return Image


def read_image(source: str | os.PathLike | bytes | io.IOBase, name: str | None = None) -> np.ndarray:
    """Decode an image (jpg/png/webp/bmp...) from a file path, bytes or a binary file to `(H, W, 3)` uint8 RGB.

    Raises :class:`ImageReadError` naming `name` (default: the path) when it is missing or unreadable.
    """
    Image = _pil()
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, source = name or "<bytes>", io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        name = name or os.fspath(source)
    else:
        name = name or "<file>"
    try:
        with Image.open(source) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise ImageReadError(f"{name}: image file does not exist") from None
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... for bad data
        raise ImageReadError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None


def probe_image_bytes(data: bytes) -> tuple[int, int]:
    """`(width, height)` of in-memory image bytes (header only)."""
    with _pil().open(io.BytesIO(data)) as im:
        return im.size
