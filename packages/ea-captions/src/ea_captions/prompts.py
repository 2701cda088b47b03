"""Prompt templates for captioning: what the vision-language model is asked about a clip.

A video model learns motion from its captions, so the default video prompt asks for what happens
over time (actions in order, camera movement, changes) as well as what is seen. Templates are
plain strings; `{duration}` and `{num_frames}` are filled from the clip when present:

    render_prompt("detailed", is_image=False, duration=4.0, num_frames=8)
"""

from __future__ import annotations

PROMPTS: dict[str, dict[str, str]] = {
    "detailed": {
        "video": (
            "Describe this {duration:.1f}-second video in detail in one paragraph. Describe the main "
            "subjects and their appearance, what they do and in which order, how the camera moves, "
            "the background and setting, lighting and colours, and any visible text. Describe the "
            "events in temporal order. Do not begin with 'The video shows'."),
        "image": (
            "Describe this image in detail in one paragraph: the main subjects and their appearance, "
            "the background and setting, lighting and colours, and any visible text. Do not begin "
            "with 'The image shows'."),
    },
    "short": {
        "video": "Describe what happens in this video in one or two sentences, including camera motion.",
        "image": "Describe this image in one or two sentences.",
    },
    "motion": {
        "video": (
            "Describe the motion in this video: how each subject moves over time, in order, and how "
            "the camera moves (pan, tilt, zoom, static). Then briefly describe the scene."),
        "image": "Describe this image in detail in one paragraph.",
    },
}


def render_prompt(template: str, is_image: bool, duration: float = 0.0, num_frames: int = 1) -> str:
    """The prompt text for one clip.

    `template` is a name in :data:`PROMPTS` or a literal prompt (used for videos and images alike; it
    may contain `{duration}` and `{num_frames}`).
    """
    text = PROMPTS[template]["image" if is_image else "video"] if template in PROMPTS else template
    try:
        return text.format(duration=duration, num_frames=num_frames)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"prompt {template!r}: only {{duration}} and {{num_frames}} may be used as fields "
                         f"(use {{{{ }}}} for literal braces): {e}") from None
