"""Post-processing on crafted captions: boilerplate, repetition loops, truncation, empty, length bounds."""

import pytest

from ea_captions.postprocess import (
    PostprocessConfig,
    clean_caption,
    find_repetition,
    is_truncated,
    strip_boilerplate,
)

GOOD = "A red car drives along a coastal road while the camera follows it from behind."


@pytest.mark.parametrize("raw, expected", [
    ("The video shows a red car driving away.", "A red car driving away."),
    ("In this video, a dog runs across a field.", "A dog runs across a field."),
    ("In the video a dog runs.", "A dog runs."),
    ("This video depicts a sunset over the sea.", "A sunset over the sea."),
    ("The clip captures two people talking.", "Two people talking."),
    ("We see a man walking.", "A man walking."),
    ("Sure! Here is a detailed description of the video: a cat jumps.", "A cat jumps."),
    ("Sure, in this video, we see a cat jump.", "A cat jump."),
    ("The image shows a bowl of fruit.", "A bowl of fruit."),
    ("Description: a tree in the wind.", "A tree in the wind."),
])
def test_strip_boilerplate(raw, expected):
    assert strip_boilerplate(raw) == expected


@pytest.mark.parametrize("text", [
    GOOD,
    "The video game character jumps over a wall.",  # "The video game" is content, not boilerplate
    "Videos of cats are popular.",
])
def test_strip_boilerplate_keeps_content(text):
    assert strip_boilerplate(text) == text


@pytest.mark.parametrize("text, gram", [
    ("a cat a cat a cat a cat sits on the mat", "a cat"),
    ("The man walks. The man walks. The man walks. The man walks.", "the man walks"),
    ("red red red red red red car", "red"),
    ("a dog runs and jumps and the dog runs and jumps and the dog runs and jumps and the dog runs and jumps "
     "and the", "dog runs and jumps"),
])
def test_repetition_loops_detected(text, gram):
    found = find_repetition(text)
    assert found is not None and gram in found
    result = clean_caption(text)
    assert result.caption == "" and result.reason.startswith("repetition:")


def test_non_adjacent_domination_detected():
    text = ("Blue sky, blue car, blue road, blue lights, blue shadows, blue walls, blue houses, blue doors, "
            "blue roofs, blue trees and blue clouds.")
    assert "blue" in find_repetition(text)


@pytest.mark.parametrize("text", [
    GOOD,
    "The very very very big dog runs.",  # three adjacent repeats of a word is still language
    "A man walks, then a woman walks, then a child walks across the street.",
    "Left to right, right to left, the camera pans back and forth over the city at night.",
])
def test_normal_text_is_not_a_repetition(text):
    assert find_repetition(text) is None
    assert clean_caption(text).ok


def test_truncation():
    cut = "A red car drives along a coastal road while the camera"
    assert is_truncated(cut, finished=False)
    assert not is_truncated(cut, finished=True)  # the model chose to stop: not a truncation
    assert not is_truncated(GOOD, finished=False)  # hit the limit exactly at a sentence end
    r = clean_caption(cut, finished=False)
    assert r.caption == "" and r.reason.startswith("truncated:")
    # A full sentence before the cut is kept, the dangling part dropped.
    r = clean_caption(GOOD + " Then the car turns left and", finished=False)
    assert r.ok and r.caption == GOOD
    # ... unless salvaging is off
    r = clean_caption(GOOD + " Then the car", finished=False, config=PostprocessConfig(salvage_truncated=False))
    assert r.reason.startswith("truncated:")
    # --keep-truncated
    assert clean_caption(cut, finished=False, config=PostprocessConfig(reject_truncated=False)).caption == cut


@pytest.mark.parametrize("raw, tag", [
    ("", "empty"),
    ("   \n ", "empty"),
    ("The video shows", "empty"),
    ("A car.", "too_short"),
])
def test_empty_and_short(raw, tag):
    r = clean_caption(raw)
    assert r.caption == "" and r.reason.split(":")[0] == tag


def test_length_bounds():
    words = " ".join(f"w{i}" for i in range(50)) + "."
    assert clean_caption(words, config=PostprocessConfig(max_words=49)).reason.startswith("too_long: 50 words")
    assert clean_caption(words, config=PostprocessConfig(max_words=50)).ok
    assert clean_caption("A red car.", config=PostprocessConfig(min_words=3)).ok
    assert clean_caption("A red car.", config=PostprocessConfig(min_words=4)).reason.startswith("too_short")


def test_whitespace_collapsed_and_boilerplate_optional():
    r = clean_caption("In this video,\n a dog\n\n runs  fast.")
    assert r.caption == "A dog runs fast."
    r = clean_caption("In this video, a dog runs fast.", config=PostprocessConfig(strip_boilerplate=False))
    assert r.caption == "In this video, a dog runs fast."
