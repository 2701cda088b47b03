"""Fixtures for ea_captions: tiny random vision-language models saved like a Hub checkpoint, and data.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on a few sentences, with the
special tokens the Qwen2-VL / LLaVA processors and chat templates need; configs are real
architectures shrunk to a few thousand parameters. Each model folder is written with
`save_pretrained` and loaded back by the code under test through `AutoProcessor` /
`AutoModelForImageTextToText`, exactly as a user's `--model PATH` is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
LLAVA_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# The chat templates follow the structure of the real models' templates (role headers, media
# placeholders where the content lists them, generation prompt), reduced to what captioning uses.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<video>\n"
    "{% elif c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CORPUS = [
    "A video in which a red circle moves and rotates over a blue and white checker background.",
    "The background pans slowly to the left. The camera is static.",
    "An image in which a green star rests over a yellow and purple stripes background.",
    "A cyan triangle moves, then an orange square rotates. The text is shown at the bottom.",
    "Describe this video in detail in one paragraph. Describe the main subjects and their appearance, "
    "what they do and in which order, how the camera moves, the background and setting, lighting and "
    "colours, and any visible text. Describe the events in temporal order. Do not begin with the video shows.",
    "user assistant system second image",
]


def make_tokenizer(special: list[str], vocab_size: int = 400):
    """A byte-level BPE trained on CORPUS, wrapped as a transformers fast tokenizer (left padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def build_tiny_qwen2vl(path, seed: int = 0):
    """Save a tiny random Qwen2-VL (2 text layers, 1 vision block, 8 px patches) + processor to `path`."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = make_tokenizer(QWEN_SPECIAL)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    # 8 px patches merged 2x2: every 16x16 pixels of a pair of frames is one token; frames go to 32x32.
    pix = dict(min_pixels=16 * 16, max_pixels=32 * 32, patch_size=8, merge_size=2, temporal_patch_size=2)
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**pix), tokenizer=tok,
                                 video_processor=Qwen2VLVideoProcessor(**pix), chat_template=QWEN_CHAT_TEMPLATE)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         initializer_range=0.3),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=8, spatial_merge_size=2,
                           temporal_patch_size=2, mlp_ratio=2, initializer_range=0.3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_qwen2_5_vl(path, seed: int = 0):
    """Save a tiny random Qwen2.5-VL (window attention vision tower, time-aware M-RoPE) to `path`."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = make_tokenizer(QWEN_SPECIAL)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    pix = dict(min_pixels=16 * 16, max_pixels=32 * 32, patch_size=8, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pix), tokenizer=tok,
                                    video_processor=Qwen2VLVideoProcessor(**pix), chat_template=QWEN_CHAT_TEMPLATE)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         initializer_range=0.3),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=32, out_hidden_size=64,
                           fullatt_block_indexes=[1], tokens_per_second=2, initializer_range=0.3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_llava_onevision(path, seed: int = 0):
    """Save a tiny random LLaVA-OneVision (SigLIP 32 px / 8 px patches, Qwen2 text) + processor to `path`."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tok = make_tokenizer(LLAVA_SPECIAL)
    ids = {t: tok.convert_tokens_to_ids(t) for t in LLAVA_SPECIAL}
    size = {"height": 32, "width": 32}
    image_processor = LlavaOnevisionImageProcessor(size=size, crop_size=size, image_grid_pinpoints=[[32, 32]],
                                                   do_pad=True)
    video_processor = LlavaOnevisionVideoProcessor(size=size)
    processor = LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tok,
                                        video_processor=video_processor, num_image_tokens=16,
                                        vision_feature_select_strategy="full", chat_template=LLAVA_CHAT_TEMPLATE,
                                        vision_aspect_ratio="anyres_max_1")
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"], initializer_range=0.3),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_grid_pinpoints=[[32, 32]], vision_aspect_ratio="anyres_max_1")
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_qwen2vl(tmp_path_factory):
    """Folder of a saved tiny Qwen2-VL checkpoint (config, safetensors, tokenizer, processor, template)."""
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    return build_tiny_llava_onevision(tmp_path_factory.mktemp("tiny-llava-onevision"))


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A small ea_data.synthetic data set: 2 videos x 2 scenes (64x48, 8 fps), 2 images."""
    from ea_data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    records = make_dataset(root, num_videos=2, num_images=2, seed=3, width=64, height=48, fps=8.0,
                           scenes_per_video=2, scene_seconds=(2.0, 3.0), text_fraction=0.0)
    return root, records


def manifest_records(records: list[dict], bad_sources: tuple[str, ...] = ()) -> list[dict]:
    """ea_data manifest records: one kept clip per scene, one clip straddling each cut (mostly in the
    second scene), the images, a rejected clip (must stay untouched) and kept records for `bad_sources`."""
    from ea_data.manifest import new_record

    out = []
    for r in records:
        if r["type"] == "image":
            out.append(new_record(r["file"], type="image", status="kept", width=r["width"], height=r["height"]))
            continue
        fps = r["fps"]
        spans = [(s["start_frame"], s["end_frame"]) for s in r["scenes"]]
        for a, b in zip(r["scenes"][:-1], r["scenes"][1:], strict=True):
            spans.append((a["end_frame"] - 3, b["start_frame"] + 9))
        for sf, ef in spans:
            out.append(new_record(r["file"], type="video", status="kept", start_frame=sf, end_frame=ef,
                                  start_time=sf / fps, end_time=ef / fps, fps=fps, width=r["width"],
                                  height=r["height"]))
    first_video = next(r for r in records if r["type"] == "video")
    out.append(new_record(first_video["file"], type="video", status="rejected", reject_reason="too_short",
                          start_frame=0, end_frame=4, start_time=0.0, end_time=0.5, fps=first_video["fps"]))
    for src in bad_sources:
        out.append(new_record(src, type="video", status="kept", start_frame=0, end_frame=16, start_time=0.0,
                              end_time=2.0, fps=8.0, width=64, height=48))
    return out


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl(tmp_path_factory):
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen2_5_vl"))


@pytest.fixture(scope="session")
def make_manifest():
    """`manifest_records` as a fixture (test modules cannot import conftest by name reliably)."""
    return manifest_records


@pytest.fixture
def np_rng():
    return np.random.default_rng(0)
