"""T5TextEncoder on a tiny T5 built and saved locally (ByT5 tokenizer: no files to download)."""

from __future__ import annotations

import pytest
import torch

from ea_dit import T5TextEncoder

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=384, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)
    model = transformers.T5EncoderModel(config).eval()
    tokenizer = transformers.ByT5Tokenizer()
    flat = tmp_path_factory.mktemp("t5")
    model.save_pretrained(flat)
    tokenizer.save_pretrained(flat)
    pipeline = tmp_path_factory.mktemp("pipeline")  # PixArt pipeline layout
    model.save_pretrained(pipeline / "text_encoder")
    tokenizer.save_pretrained(pipeline / "tokenizer")
    return model, flat, pipeline


def test_short_prompt_padded_to_120_with_mask(tiny_t5):
    model, flat, _ = tiny_t5
    enc = T5TextEncoder.from_pretrained(flat)
    embeds, mask = enc(["a cat", "a dog running"])
    assert embeds.shape == (2, 120, 16) and mask.shape == (2, 120) and mask.dtype == torch.bool
    # ByT5: one token per byte plus </s>
    assert mask.sum(1).tolist() == [len("a cat") + 1, len("a dog running") + 1]
    assert not mask[0, 6:].any()
    # independent: byte ids (+3 offset of ByT5's specials), EOS = 1, pad = 0, straight into the T5 encoder
    ids = torch.zeros(1, 120, dtype=torch.long)
    ids[0, :5] = torch.tensor([b + 3 for b in b"a cat"])
    ids[0, 5] = 1
    am = (torch.arange(120) < 6).long()[None]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=am).last_hidden_state
    torch.testing.assert_close(embeds[:1], expected)


def test_long_prompt_truncated_to_120(tiny_t5):
    _, flat, pipeline = tiny_t5
    enc = T5TextEncoder.from_pretrained(pipeline)  # text_encoder/ + tokenizer/ subfolders
    ids, mask = enc.tokenize("x" * 500)
    assert ids.shape == (1, 120) and bool(mask.all())
    assert ids[0, -1].item() == 1  # truncation keeps the closing </s>
    embeds, mask = enc("x" * 500)
    assert embeds.shape == (1, 120, 16)
    short = T5TextEncoder.from_pretrained(flat, max_length=8)
    assert short("hello world")[0].shape == (1, 8, 16)


def test_bad_prompts_raise(tiny_t5):
    _, flat, _ = tiny_t5
    enc = T5TextEncoder.from_pretrained(flat)
    with pytest.raises(TypeError, match="list of strings"):
        enc([1, 2])
    with pytest.raises(ValueError, match="empty"):
        enc([])
    with pytest.raises(ValueError, match="is a file"):
        T5TextEncoder.from_pretrained(flat / "config.json")
