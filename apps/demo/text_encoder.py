"""The demo's text encoder: a small random T5 encoder with a word-level tokenizer, built locally.

Why word level: with a byte-level tokenizer and random weights, captions that differ in one word
("a red circle moves left" / "... right") come out nearly identical, and the DiT cannot tell them
apart. Here every word of the demo world's vocabulary is one token with its own (random, frozen)
embedding, so one different word is one clearly different token. The T5 itself stays random and frozen
(it is not a language model; the DiT learns what the tokens mean). The folder is a normal
transformers T5 + `PreTrainedTokenizerFast` pair, loaded with `T5TextEncoder.from_pretrained` like a
real T5; real runs pass a pretrained T5 (PixArt: t5-v1_1-xxl) with `--text-encoder` instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from ea_core.atomic import atomic_directory

SPECIAL = ("<pad>", "</s>", "<unk>")  # T5's ids: pad 0, eos 1, unk 2


def demo_vocabulary() -> list[str]:
    """Every word the demo world's captions use (demo_scene_caption, image captions), lower case."""
    from ea_data.synthetic import COLOR_NAMES, DIRECTIONS, SHAPES, WORDS

    words = ["a", "an", "moves", "rests", "as", "the", "background", "pans", "quickly", "under", "text"]
    words += list(COLOR_NAMES) + list(SHAPES) + list(DIRECTIONS) + [w.lower() for w in WORDS]
    return list(dict.fromkeys(words))


def build_word_level_t5(path: str | os.PathLike, words: list[str], d_model: int = 64, layers: int = 1,
                        seed: int = 0) -> Path:
    """Save a random T5 encoder (`d_model` wide, `layers` deep) and a word-level tokenizer over `words`.

    Unknown words map to `<unk>`; punctuation is split off; text is lower-cased. Returns `path`.
    """
    path = Path(path)
    if (path / "config.json").exists():
        return path
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {w: i for i, w in enumerate(list(SPECIAL) + [w for w in words if w not in SPECIAL])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(vocab), d_model=d_model, d_kv=d_model // 4, d_ff=2 * d_model,
                      num_layers=layers, num_heads=4, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                      pad_token_id=0, eos_token_id=1)
    model = T5EncoderModel(config)
    with torch.no_grad():  # unit-variance token embeddings: distinct words are far apart
        model.shared.weight.normal_(0.0, 1.0)
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        fast.save_pretrained(tmp)
    return path
