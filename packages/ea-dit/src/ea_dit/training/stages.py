"""The paper's DiT training stages and the adaptation of a PixArt-alpha checkpoint to another VAE.

- `image`: image data only (F = 1); every parameter except the motion modules, which stay frozen.
  Starting from PixArt-alpha, the patch embedding and the output layer are re-initialised when the
  VAE's latent channels differ from the checkpoint's (e.g. PixArt's 4 -> the released VAE's 16).
- `motion`: the motion modules and the other layers new to EasyAnimate (the U-ViT long skips) only,
  on video and image batches.
- `full`: every parameter.

The `final/` folder of one stage is the `--dit` of the next.
"""

from __future__ import annotations

import dataclasses
import os

from torch import nn

from ea_dit.model import VideoDiT

STAGES = ("image", "motion", "full")
# layers that depend on the latent channel count: re-initialised when it changes
CHANNEL_LAYERS = ("patch_embed.proj.", "final_layer.linear.")


def adapt_latent_channels(model: VideoDiT, latent_channels: int) -> VideoDiT:
    """`model` itself when it already takes `latent_channels`; else a copy whose patch embedding and
    output layer are freshly initialised for `latent_channels` (output 2x with learned sigma), every
    other weight kept.
    """
    c = model.config
    if c.in_channels == latent_channels:
        return model
    out = 2 * latent_channels if c.learn_sigma else latent_channels
    new = VideoDiT(dataclasses.replace(c, in_channels=latent_channels, out_channels=out))
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith(CHANNEL_LAYERS)}
    missing, unexpected = new.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith(CHANNEL_LAYERS) for k in missing), (missing, unexpected)
    return new.to(device=model.device, dtype=model.dtype)


def load_dit_for_stage(path: str | os.PathLike, latent_channels: int, **overrides) -> VideoDiT:
    """`VideoDiT.from_pretrained(path, **overrides)` adapted to a VAE with `latent_channels`."""
    return adapt_latent_channels(VideoDiT.from_pretrained(path, **overrides), latent_channels)


def trainable_parameters(model: VideoDiT, stage: str) -> list[nn.Parameter]:
    """The parameters a stage trains (see the module docstring); freezes all the others in place."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    names = dict(model.named_parameters())
    if stage == "full":
        chosen = set(names)
    elif stage == "image":
        chosen = {n for n in names if ".motion_module." not in n}
    else:
        chosen = {n for n in names if ".motion_module." in n or n.startswith("long_skips.")}
    model.requires_grad_(False)
    params = []
    for n, p in names.items():
        if n in chosen:
            p.requires_grad_(True)
            params.append(p)
    return params
