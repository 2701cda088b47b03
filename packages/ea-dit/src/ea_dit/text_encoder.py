"""T5 text encoder wrapper: prompts -> (embeddings, mask) as PixArt-alpha feeds them to the DiT.

PixArt pads/truncates every prompt to 120 T5 tokens and passes the attention mask on to the DiT's
cross-attention. `transformers` is imported only when a model is loaded.
"""

from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ea_core.files import check_safetensors_folder

PIXART_MAX_LENGTH = 120


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_local_path(value: str | os.PathLike, what: str = "text encoder") -> None:
    """Raise FileNotFoundError at once when `value` reads as a local path that does not exist.

    A path is a value starting with ``.``, ``/`` or ``~``, holding a backslash or more than one ``/``,
    or an ``a/b`` whose ``a`` is a folder here (``runs/text_encodr`` next to ``runs/``); a hub id is
    ``owner/name`` with no such folder. Without this check a typo'd folder becomes a hub download that
    retries for about 25 s before failing.
    """
    text = str(value)
    path = Path(text).expanduser()
    if path.exists():
        return
    parts = text.replace("\\", "/").split("/")
    looks_local = (text.startswith((".", "/", "~")) or "\\" in text or len(parts) > 2
                   or (len(parts) == 2 and Path(parts[0]).is_dir()))
    if not looks_local:
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    hint = ""
    if parent.is_dir() and parent == path.parent:
        close = difflib.get_close_matches(path.name, sorted(p.name for p in parent.iterdir()), n=1)
        hint = f"; did you mean {str(parent / close[0])!r}?" if close else ""
    elif parent != path.parent:
        hint = f"; {parent} exists but {path.relative_to(parent).parts[0]!r} is not in it"
    raise FileNotFoundError(f"{what} path {text!r} does not exist{hint}")


class T5TextEncoder(nn.Module):
    """A T5 encoder and its tokenizer.

    Args:
        model: a transformers `T5EncoderModel` (any module returning `last_hidden_state`).
        tokenizer: the matching tokenizer.
        max_length: tokens per prompt, padded or truncated (PixArt: 120).

    Prompts longer than `max_length` tokens are cut to it, with one warning per call naming how many
    tokens each long prompt loses; set `warn_truncation = False` to silence it (e.g. training on long
    captions, where cutting is intended).
    """

    warn_truncation: bool = True

    def __init__(self, model: nn.Module, tokenizer, max_length: int = PIXART_MAX_LENGTH):
        super().__init__()
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                        max_length: int = PIXART_MAX_LENGTH, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, **hub_kwargs) -> T5TextEncoder:
        """Load from a folder or hub id holding both, or a pipeline folder with `text_encoder/` + `tokenizer/`.

        `tokenizer_path` overrides where the tokenizer is read from. The encoder comes back frozen, in eval
        mode, in `dtype` on `device`. Extra keyword arguments (e.g. `revision`, `local_files_only`) go to
        transformers' `from_pretrained`.
        """
        try:
            from transformers import AutoTokenizer, T5EncoderModel
        except ImportError as err:
            raise ImportError("T5TextEncoder needs the transformers package (pip install transformers)") from err
        check_local_path(path_or_id)
        if tokenizer_path is not None:
            check_local_path(tokenizer_path, "tokenizer")
        local = Path(path_or_id).expanduser()
        if not local.exists() and _offline():
            hub_kwargs.setdefault("local_files_only", True)  # offline: no download attempts, no retries
        model_path, tok_path = str(local) if local.exists() else str(path_or_id), tokenizer_path
        if local.is_dir() and (local / "text_encoder").is_dir():
            model_path = str(local / "text_encoder")
            if tok_path is None and (local / "tokenizer").is_dir():
                tok_path = local / "tokenizer"
        if local.exists() and not local.is_dir():
            raise ValueError(f"{local} is a file; expected a folder with a T5 model and tokenizer, or a hub id")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_path or model_path), **hub_kwargs)
            model = T5EncoderModel.from_pretrained(model_path, dtype=dtype, **hub_kwargs)
        except Exception as err:
            if local.is_dir():  # transformers' SafetensorError names no file: find and name it

                check_safetensors_folder(model_path)
            if not isinstance(err, OSError) or local.exists() or not hub_kwargs.get("local_files_only"):
                raise
            raise OSError(f"text encoder {str(path_or_id)!r} is not a local folder and not in the Hugging Face "
                          "cache, and downloads are off (HF_HUB_OFFLINE); give a local path or go online") from err
        model.eval().requires_grad_(False)
        return cls(model.to(device), tokenizer, max_length=max_length).eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, prompts: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts -> input_ids (B, max_length) long, mask (B, max_length) bool (True = real token)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list | tuple) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a string or a list of strings")
        if len(prompts) == 0:
            raise ValueError("prompts is empty; give at least one prompt")
        self._warn_truncation(prompts)
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        return tokens.input_ids, tokens.attention_mask.to(torch.bool)

    def _warn_truncation(self, prompts) -> None:
        """One warning naming how many tokens past `max_length` each long prompt loses (PixArt keeps 120)."""
        if not self.warn_truncation:
            return
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
        cut = []
        for i, n in enumerate(lengths):
            if n > self.max_length:
                kept = self.tokenizer.decode(self.tokenizer(prompts[i], add_special_tokens=False)["input_ids"]
                                             [: self.max_length - 1][-24:])
                cut.append(f"prompt {i} has {n} tokens but the text encoder keeps {self.max_length}: the last "
                           f"{n - self.max_length} are dropped (everything after ...{kept!r})")
        if cut:
            warnings.warn("; ".join(cut), stacklevel=3)

    @torch.no_grad()
    def forward(self, prompts: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts -> embeddings (B, max_length, d_model) in the model's dtype, mask (B, max_length) bool."""
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask.long())
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return hidden, mask
