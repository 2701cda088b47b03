"""Caption post-processing: strip boilerplate, catch degenerate output, enforce length bounds.

Vision-language models open most captions with a formula ("The video shows ...", "In this video,
...") that carries no information and, repeated over a whole data set, teaches the text encoder a
useless prefix. Small or badly prompted models also degenerate: they loop ("a cat a cat a cat"),
return nothing, or are cut off by `max_new_tokens` in the middle of a sentence. :func:`clean_caption`
turns a raw model output into either a usable caption or a rejection with a reason:

    result = clean_caption("The video shows a red car driving away.", finished=True)
    result.caption   # "A red car driving away."
    result.reason    # None; for a bad caption e.g. "repetition: 'a cat' x4" and caption == ""

Reasons start with a fixed tag (``empty``, ``repetition``, ``truncated``, ``too_short``, ``too_long``)
followed by details, so they can be counted with ``reason.split(":")[0]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ea_core.files import FRACTION, NON_NEGATIVE, POSITIVE, check_fields

#: Openings that say "this is a video/image" and nothing else; matched case-insensitively at the start.
BOILERPLATE_PATTERNS = (
    r"(?:in|throughout) (?:this|the) (?:short |brief )?(?:video|clip|footage|image|picture|scene)(?: clip)?,?",
    r"(?:this|the) (?:short |brief )?(?:video|clip|footage|image|picture)(?: clip)? "
    r"(?:shows|depicts|features|captures|presents|displays|showcases|begins with|starts with|is of)",
    r"(?:the )?(?:video|clip|footage|image|picture) (?:shows|depicts|features|captures|displays|showcases)",
    r"(?:here|this) (?:is|we see)",
    r"(?:we|you) (?:can )?see",
    r"(?:sure|certainly|of course|okay)[,!.](?=\s)",
    r"(?:sure|certainly|of course)[,!.]?(?: here is| here's)?(?: a| the)?(?: detailed)? (?:description|caption)"
    r"(?: of (?:the|this) (?:video|image|clip))?[:.]?",
    r"(?:a )?(?:detailed )?(?:description|caption)(?: of (?:the|this) (?:video|image|clip))?:",
)
_BOILERPLATE = re.compile(r"^\s*(?:" + "|".join(BOILERPLATE_PATTERNS) + r")\s*(?:that\s+)?[:,]?\s*",
                          re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


@dataclass
class PostprocessConfig:
    """Bounds and detectors for :func:`clean_caption`.

    `max_repeats`: an n-gram (n = 1..`max_ngram`) repeated back to back more than this many times is a
    repetition loop (single words need `max_repeats + 2`, since "very very very" happens in real text).
    `max_word_fraction`: a caption where one content word makes up more than this fraction of at least
    20 words is degenerate even when the repeats are not adjacent.
    A truncated caption (cut by `max_new_tokens` mid-sentence) is cut back to its last full sentence
    when `salvage_truncated` and that keeps `min_words`; otherwise it is rejected (`reject_truncated`).
    """

    min_words: int = 3
    max_words: int = 300
    strip_boilerplate: bool = True
    max_ngram: int = 8
    max_repeats: int = 3
    max_word_fraction: float = 0.3
    reject_truncated: bool = True
    salvage_truncated: bool = True

    def __post_init__(self):
        check_fields(self, {"min_words": NON_NEGATIVE, "max_words": POSITIVE, "max_ngram": POSITIVE,
                            "max_repeats": POSITIVE, "max_word_fraction": FRACTION})
        if self.min_words > self.max_words:
            raise ValueError(f"PostprocessConfig: min_words {self.min_words} is above max_words {self.max_words}")


@dataclass
class CleanedCaption:
    """A post-processed caption. `caption` is empty and `reason` says why when it was rejected."""

    caption: str
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def strip_boilerplate(text: str) -> str:
    """Remove formulaic openings ("The video shows", "In this video,") and capitalise what is left.

    Applied repeatedly, since models stack them ("Sure! In this video, we see ...").
    """
    text = text.strip()
    for _ in range(4):
        new = _BOILERPLATE.sub("", text, count=1).lstrip(" ,:;-")
        if new == text:
            break
        text = new
    return text[:1].upper() + text[1:] if text else text


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def find_repetition(text: str, max_ngram: int = 8, max_repeats: int = 3,
                    max_word_fraction: float = 0.3) -> str | None:
    """Describe a repetition loop in `text` (e.g. ``"'a red car' x5"``), or None when there is none.

    Looks for any n-gram (n = 1..`max_ngram` words) repeated back to back more than `max_repeats` times
    (`max_repeats + 2` for single words), then for one word dominating a long text.
    """
    words = _words(text)
    for n in range(1, max_ngram + 1):
        limit = max_repeats + 2 if n == 1 else max_repeats
        i = 0
        while i + n <= len(words):
            gram = words[i:i + n]
            count = 1
            while words[i + count * n:i + (count + 1) * n] == gram:
                count += 1
            if count > limit:
                return f"{' '.join(gram)!r} x{count}"
            i += 1 if count == 1 else (count - 1) * n
    if len(words) >= 20:
        content = [w for w in words if len(w) > 3]
        for w in set(content):
            frac = content.count(w) / len(words)
            if frac > max_word_fraction:
                return f"{w!r} is {frac:.0%} of the words"
    return None


def is_truncated(text: str, finished: bool) -> bool:
    """True when generation stopped before the end of a sentence.

    `finished` is whether the model emitted its end-of-sequence token; a caption that did not finish
    (it hit `max_new_tokens`) and does not end with sentence punctuation was cut mid-sentence.
    """
    return not finished and not _SENTENCE_END.search(text.strip())


def _last_sentence_end(text: str) -> int:
    """Index just past the last sentence-ending punctuation (with closing quotes), 0 if none."""
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]*(?=\s|$)", text)]
    return ends[-1] if ends else 0


def clean_caption(raw: str, finished: bool = True, config: PostprocessConfig | None = None) -> CleanedCaption:
    """Turn a raw model output into a caption, or reject it with a reason (see the module docstring)."""
    cfg = config or PostprocessConfig()
    text = " ".join(raw.split())  # collapse newlines and runs of spaces
    if not text:
        return CleanedCaption("", "empty: the model returned no text")
    rep = find_repetition(text, cfg.max_ngram, cfg.max_repeats, cfg.max_word_fraction)
    if rep is not None:
        return CleanedCaption("", f"repetition: {rep}")
    if cfg.reject_truncated and is_truncated(text, finished):
        cut = _last_sentence_end(text)
        if not (cfg.salvage_truncated and cut and len(_words(text[:cut])) >= cfg.min_words):
            return CleanedCaption("", f"truncated: generation hit max_new_tokens mid-sentence "
                                      f"({text[-40:]!r})")
        text = text[:cut]
    if cfg.strip_boilerplate:
        text = strip_boilerplate(text)
    n = len(_words(text))
    if n == 0:
        return CleanedCaption("", "empty: nothing left after removing boilerplate")
    if n < cfg.min_words:
        return CleanedCaption("", f"too_short: {n} words < min_words {cfg.min_words}")
    if n > cfg.max_words:
        return CleanedCaption("", f"too_long: {n} words > max_words {cfg.max_words}")
    return CleanedCaption(text)
