"""T5 text encoder wrapper: prompts -> (embeddings, mask) as PixArt-alpha feeds them to the DiT.

PixArt pads/truncates every prompt to 120 T5 tokens and passes the attention mask on to the DiT's
cross-attention. `transformers` is imported only when a model is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

PIXART_MAX_LENGTH = 120


class T5TextEncoder(nn.Module):
    """A T5 encoder and its tokenizer.

    Args:
        model: a transformers `T5EncoderModel` (any module returning `last_hidden_state`).
        tokenizer: the matching tokenizer.
        max_length: tokens per prompt, padded or truncated (PixArt: 120).
    """

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
        model_path, tok_path = str(path_or_id), tokenizer_path
        local = Path(path_or_id)
        if local.is_dir() and (local / "text_encoder").is_dir():
            model_path = str(local / "text_encoder")
            if tok_path is None and (local / "tokenizer").is_dir():
                tok_path = local / "tokenizer"
        if local.exists() and not local.is_dir():
            raise ValueError(f"{local} is a file; expected a folder with a T5 model and tokenizer, or a hub id")
        tokenizer = AutoTokenizer.from_pretrained(str(tok_path or model_path), **hub_kwargs)
        model = T5EncoderModel.from_pretrained(model_path, dtype=dtype, **hub_kwargs)
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
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        return tokens.input_ids, tokens.attention_mask.to(torch.bool)

    @torch.no_grad()
    def forward(self, prompts: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts -> embeddings (B, max_length, d_model) in the model's dtype, mask (B, max_length) bool."""
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask.long())
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return hidden, mask
