"""EasyAnimate's motion module: temporal self-attention with Grid Reshape, usable in any spatial DiT.

The module works on the token layout of a spatial (per-frame) DiT, `x: (B*F, H*W, C)`:

    GroupNorm (per frame) -> proj_in
    -> 2 x [LayerNorm -> + temporal position -> temporal self-attention -> residual]
    -> LayerNorm -> GEGLU feed-forward -> residual
    -> proj_out (zero-initialised) -> + x

Temporal attention uses Grid Reshape (defined in `ea_dit.grid_reshape`): every sequence is the `F*g*g`
tokens of one `g x g` spatial cell. It is computed by :func:`ea_dit.attention.temporal_attention`,
which takes q/k/v in the spatial layout; with the Triton backend the reshape is folded into the kernel,
so no rearranged copy of q, k, v or the output is made.

Temporal position encoding: as in EasyAnimate, each token gets the sinusoidal encoding of its frame
index (interleaved sin/cos, table of `max_len` frames), added to the normalised input of each attention.
In the grid-reshaped `(f n m)` order, sequence position `i` therefore carries `pe[i // g^2]`; adding it
in the spatial layout is the same thing without the copy.

:func:`insert_motion_modules` plugs motion modules into a foreign transformer (e.g. diffusers'
`PixArtTransformer2DModel`) between each block's self-attention and cross-attention.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ea_dit.attention import temporal_attention
from ea_dit.grid_reshape import TokenGrid, check_tokens


def temporal_position_table(num_frames: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(num_frames, dim) fp32 sinusoids, interleaved: `pe[t, 2i] = sin(t w_i)`, `pe[t, 2i+1] = cos(t w_i)`,
    `w_i = 10000^(-2i/dim)`. Rows are the first rows of EasyAnimate's 4096-frame table."""
    if dim % 2:
        raise ValueError(f"temporal position encoding needs an even dimension, got {dim}")
    position = torch.arange(num_frames, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    angles = position * div  # (F, dim/2)
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (stable under bf16 training), result cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class GEGLU(nn.Module):
    """`fc2(a * gelu(g))` with `[a, g] = fc1(x)`: the GEGLU feed-forward of the motion module."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * mult * dim)
        self.fc2 = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(a * F.gelu(g))


class TemporalSelfAttention(nn.Module):
    """Grid-Reshape temporal self-attention on `(B*F, N, C)` tokens (q/k/v without bias, as in the reference)."""

    def __init__(self, dim: int, num_heads: int, grid: int, backend: str):
        super().__init__()
        self.num_heads, self.grid, self.backend = num_heads, grid, backend
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, tokens: TokenGrid) -> torch.Tensor:
        q, k, v = (rearrange(f(x), "n l (h d) -> n l h d", h=self.num_heads) for f in (self.to_q, self.to_k, self.to_v))
        out = temporal_attention(q, k, v, tokens, grid=self.grid, backend=self.backend)
        return self.to_out(rearrange(out, "n l h d -> n l (h d)"))


class MotionModule(nn.Module):
    """Temporal transformer that starts as the identity (zero `proj_out`).

    Args:
        dim: channels C of the host's tokens.
        num_heads: temporal attention heads (8 in EasyAnimate).
        grid: Grid Reshape cell size g (2 in EasyAnimate V1; 1 = per-token temporal attention).
        num_layers: temporal self-attentions before the feed-forward (2).
        max_len: most frames the temporal position encoding accepts (4096, EasyAnimate's table length).
        norm_groups: groups of the input GroupNorm (32).
        attention_backend: "sdpa" | "xformers" | "triton".
    """

    def __init__(self, dim: int, num_heads: int = 8, grid: int = 2, num_layers: int = 2, max_len: int = 4096,
                 norm_groups: int = 32, attention_backend: str = "sdpa"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MotionModule: dim {dim} is not divisible by num_heads {num_heads}")
        if dim % norm_groups:
            raise ValueError(f"MotionModule: dim {dim} is not divisible by norm_groups {norm_groups}")
        if grid < 1:
            raise ValueError(f"MotionModule: grid must be >= 1, got {grid}")
        self.dim, self.grid, self.max_len = dim, grid, max_len
        self.norm = nn.GroupNorm(norm_groups, dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim)
        self.attn_norms = nn.ModuleList([FP32LayerNorm(dim) for _ in range(num_layers)])
        self.attns = nn.ModuleList([TemporalSelfAttention(dim, num_heads, grid, attention_backend)
                                    for _ in range(num_layers)])
        self.ff_norm = FP32LayerNorm(dim)
        self.ff = GEGLU(dim)
        self.proj_out = nn.Linear(dim, dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Zero `proj_out`: a fresh module returns its input exactly, so a pretrained host is unchanged."""
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def set_attention_backend(self, backend: str) -> None:
        for attn in self.attns:
            attn.backend = backend

    def forward(self, x: torch.Tensor, tokens: TokenGrid) -> torch.Tensor:
        """x: (B*F, height*width, C) tokens of F frames per video, row-major; tokens = (F, height, width).

        Returns the same shape. Raises ValueError on a shape the module cannot take.
        """
        tokens = TokenGrid(*tokens)
        self._check_input(x, tokens)
        num_frames = tokens.num_frames
        # GroupNorm per frame, over the frame's tokens, as on (b f) c h w in the reference
        h = self.norm(rearrange(x, "n l c -> n c l"))
        h = self.proj_in(rearrange(h, "n c l -> n l c"))
        # computed per call (F x C is tiny) rather than stored: a 4096-row table per module would cost
        # ~19 MB each at C = 1152; max_len only bounds the frame count, as in the reference
        pos = temporal_position_table(num_frames, self.dim, device=h.device).to(h.dtype)  # (F, C)
        for norm, attn in zip(self.attn_norms, self.attns):
            hn = norm(h)
            hn = (rearrange(hn, "(b f) l c -> b f l c", f=num_frames) + pos[None, :, None]).flatten(0, 1)
            h = attn(hn, tokens) + h
        h = self.ff(self.ff_norm(h)) + h
        return self.proj_out(h) + x

    def _check_input(self, x: torch.Tensor, tokens: TokenGrid) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"MotionModule input has shape {shape}; expected (batch*frames, height*width, "
                             f"{self.dim})")
        if not x.is_floating_point():
            raise TypeError(f"MotionModule input has dtype {x.dtype}; expected a floating-point tensor")
        if tokens.num_frames > self.max_len:
            raise ValueError(f"MotionModule got {tokens.num_frames} frames; its temporal position table covers "
                             f"max_len={self.max_len}")
        check_tokens(x, tokens, self.grid, "MotionModule input")


# ----------------------------------------------------------------------------------------------
# inserting motion modules into a foreign transformer
# ----------------------------------------------------------------------------------------------


class _MotionContext:
    """What the inserted motion modules need to know about the current host forward.

    `num_frames` comes from :func:`video_frames`; the token height/width from `video_frames` too, or
    else from the host's input when it has a `config.patch_size` (diffusers models). The host's forward
    pre-hook combines them into `tokens`, the :class:`TokenGrid` every motion module of that forward uses.
    """

    def __init__(self):
        self.num_frames: int | None = None
        self.size: tuple[int, int] | None = None  # (height, width) in tokens, given to video_frames
        self.tokens: TokenGrid | None = None


class _MotionHook:
    """Runs a motion module on the residual stream that enters the host block's cross-attention.

    The block computes `h = cross_attn(x) + x` with x the residual stream (PixArt applies no norm before
    its cross-attention). A forward pre-hook replaces the cross-attention input by `y = mm(x)` and a
    forward hook adds `y - x` to its output, so the block computes `cross_attn(y) + y` - the motion module
    sits exactly between self-attention and cross-attention, with no change to the host's code or keys.
    """

    def __init__(self, module: MotionModule, context: _MotionContext):
        self.module, self.context = module, context
        self._delta: list[torch.Tensor] = []

    def pre_hook(self, attn: nn.Module, args: tuple, kwargs: dict):
        tokens = self.context.tokens
        if tokens is None:
            raise RuntimeError("motion modules are inserted but the video shape is unknown: run the host inside "
                               "`with video_frames(transformer, num_frames): ...` (give height/width too if the "
                               "host has no config.patch_size)")
        x = args[0] if args else kwargs["hidden_states"]
        y = self.module(x, tokens)
        self._delta.append(y - x)
        if args:
            return (y, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": y}

    def hook(self, attn: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
        return output + self._delta.pop()


def _token_grid_hook(transformer: nn.Module, context: _MotionContext):
    """Host forward pre-hook: the token grid of this forward, from video_frames and the host's input."""
    patch = getattr(getattr(transformer, "config", None), "patch_size", None)

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict):
        size = context.size
        latents = args[0] if args else kwargs.get("hidden_states")
        if size is None and patch and isinstance(latents, torch.Tensor) and latents.dim() == 4:
            size = (latents.shape[-2] // patch, latents.shape[-1] // patch)
        ok = context.num_frames is not None and size is not None
        context.tokens = TokenGrid(context.num_frames, *size) if ok else None

    return pre_hook


def insert_motion_modules(transformer: nn.Module, num_heads: int = 8, grid: int = 2,
                          positions: Sequence[int] | None = None, blocks_attr: str = "transformer_blocks",
                          cross_attention_attr: str = "attn2", **module_kwargs) -> nn.ModuleList:
    """Plug fresh motion modules into a foreign spatial transformer, between self- and cross-attention.

    The host keeps its own forward: hooks on each chosen block's cross-attention module run the motion
    module on the residual stream (see `_MotionHook`). The modules are registered as
    `transformer.motion_modules` (so they appear in `parameters()`/`state_dict()`); the host's own keys
    are unchanged. Because the host only sees a batch of B*F frames, the number of frames is given per
    forward through a context:

        mms = insert_motion_modules(pixart)                      # diffusers PixArtTransformer2DModel
        with video_frames(pixart, num_frames=F):
            out = pixart(rearrange(latents, "b c f h w -> (b f) c h w"),
                         encoder_hidden_states=text.repeat_interleave(F, 0), timestep=t.repeat_interleave(F), ...)

    The token grid (height, width) is read from the host's input when it has `config.patch_size`.

    Args:
        transformer: the host; `getattr(transformer, blocks_attr)` is its list of blocks.
        num_heads, grid, **module_kwargs: `MotionModule` settings (dim is taken from the host's blocks).
        positions: block indices that get a module; None = every block.
        cross_attention_attr: the block attribute holding the cross-attention, whose input must be the
            residual stream (true for PixArt's `ada_norm_single` blocks).

    Returns:
        The inserted modules (to train only them: `optimizer(mms.parameters())`).
    """
    if hasattr(transformer, "motion_modules"):
        raise ValueError("this transformer already has motion modules inserted")
    blocks = getattr(transformer, blocks_attr, None)
    if blocks is None:
        raise ValueError(f"{type(transformer).__name__} has no attribute {blocks_attr!r} holding its blocks")
    indices = list(range(len(blocks))) if positions is None else list(positions)
    context = _MotionContext()
    mms = nn.ModuleList()
    ref = next(transformer.parameters())
    for i in indices:
        block = blocks[i]
        norm_type = getattr(block, "norm_type", "ada_norm_single")
        if norm_type != "ada_norm_single":
            raise ValueError(f"block {i} uses norm_type={norm_type!r}: its cross-attention input is a normalised "
                             "copy, not the residual stream; only PixArt-style (ada_norm_single) blocks are supported")
        cross = getattr(block, cross_attention_attr, None)
        if cross is None:
            raise ValueError(f"block {i} has no cross-attention attribute {cross_attention_attr!r}")
        dim = getattr(block, "dim", None) or cross.to_q.in_features
        mm = MotionModule(dim, num_heads=num_heads, grid=grid, **module_kwargs).to(ref.device, ref.dtype)
        hook = _MotionHook(mm, context)
        cross.register_forward_pre_hook(hook.pre_hook, with_kwargs=True)
        cross.register_forward_hook(hook.hook, with_kwargs=True)
        mms.append(mm)
    transformer.motion_modules = mms
    transformer.motion_context = context
    transformer.register_forward_pre_hook(_token_grid_hook(transformer, context), with_kwargs=True)
    return mms


@contextlib.contextmanager
def video_frames(transformer: nn.Module, num_frames: int, height: int | None = None,
                 width: int | None = None) -> Iterator[None]:
    """Within the block, the host's batch holds videos of `num_frames` frames (frame-major per video).

    `height`, `width`: tokens per frame; needed only when the host has no `config.patch_size` to read
    them from its input.
    """
    context: _MotionContext | None = getattr(transformer, "motion_context", None)
    if context is None:
        raise ValueError("this transformer has no inserted motion modules; call insert_motion_modules first")
    if (height is None) != (width is None):
        raise ValueError("video_frames: give both height and width (tokens per frame), or neither")
    saved = (context.num_frames, context.size, context.tokens)
    context.num_frames = num_frames
    context.size = None if height is None else (height, width)
    try:
        yield
    finally:
        context.num_frames, context.size, context.tokens = saved
