"""Transformers backends on tiny random checkpoints saved to disk and loaded like a user's --model PATH."""

import numpy as np
import pytest
import torch

from ea_captions.captioner import Clip, GenerationSettings
from ea_captions.sampling import FrameSampling, load_clip
from ea_captions.vlm import VLMCaptioner


def _clips(synthetic_data):
    """Clips with different frame counts, sizes and durations (so prompts differ in length) and an image."""
    root, records = synthetic_data
    videos = [r for r in records if r["type"] == "video"]
    image = next(r for r in records if r["type"] == "image")
    clips = []
    for k, (r, n) in enumerate([(videos[0], 4), (videos[1], 2), (videos[0], 6), (videos[1], 3)]):
        s = r["scenes"][k % 2]
        clips.append(load_clip(f"v{k}", root / r["file"], s["start_time"], s["end_time"], FrameSampling(n)))
    clips[1].frames = np.ascontiguousarray(clips[1].frames[:, :32, :48])  # a different frame size
    clips.append(load_clip("img", root / image["file"]))
    return clips


def _check_batched_equals_unbatched(model_dir, synthetic_data):
    cap = VLMCaptioner.from_pretrained(model_dir, generation=GenerationSettings(max_new_tokens=12))
    clips = _clips(synthetic_data)
    batched = cap.caption(clips)
    single = [cap.caption([c])[0] for c in clips]
    assert [r.clip_id for r in batched] == [c.clip_id for c in clips]
    assert [r.text for r in batched] == [r.text for r in single]
    assert [(r.finished, r.num_tokens) for r in batched] == [(r.finished, r.num_tokens) for r in single]
    # the outputs depend on the input, so a mix-up between clips would be seen
    assert len({r.text for r in single}) >= 3
    return cap, clips, single


def test_qwen2vl_batched_equals_unbatched(tiny_qwen2vl, synthetic_data):
    cap, clips, single = _check_batched_equals_unbatched(tiny_qwen2vl, synthetic_data)
    assert cap.family.name == "qwen2vl" and cap.name == f"qwen2vl:{tiny_qwen2vl}"
    assert all(not r.finished and r.num_tokens == 12 for r in single)  # a random model never stops early
    # The comparison is sensitive to padding: right padding (the usual bug) changes the padded clips.
    cap.processor.tokenizer.padding_side = "right"
    videos = [c for c in clips if not c.is_image]
    inputs = cap.processor(text=[cap.processor.apply_chat_template(cap._messages(c), add_generation_prompt=True)
                                 for c in videos], videos=[c.frames for c in videos], padding=True,
                           return_tensors="pt")
    assert (inputs["attention_mask"] == 0).any()
    out = cap.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    right = cap.processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [t.strip() for t in right] != [r.text for r in single[:len(videos)]]


def test_llava_onevision_batched_equals_unbatched(tiny_llava, synthetic_data):
    cap, _, _ = _check_batched_equals_unbatched(tiny_llava, synthetic_data)
    assert cap.family.name == "llava"


def test_qwen2_5_vl_gets_the_frame_rate(tiny_qwen2_5_vl, np_rng):
    """Qwen2.5-VL encodes absolute time: each clip's sampled rate must reach `second_per_grid_ts`."""
    cap = VLMCaptioner.from_pretrained(tiny_qwen2_5_vl, generation=GenerationSettings(max_new_tokens=8))
    assert cap.family.name == "qwen2vl"
    frames = np_rng.integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    clips = [Clip("a", frames, fps=2.0), Clip("b", frames, fps=0.5), Clip("c", frames[:2], fps=1.0)]
    inputs = cap._inputs(clips)
    # temporal_patch_size (2) frames per grid step: 2 / fps seconds
    torch.testing.assert_close(inputs["second_per_grid_ts"], torch.tensor([1.0, 4.0, 2.0]))
    batched = cap.caption(clips)
    assert [r.text for r in batched] == [cap.caption([c])[0].text for c in clips]


def test_end_of_sequence_is_detected(tiny_qwen2vl, synthetic_data):
    cap = VLMCaptioner.from_pretrained(tiny_qwen2vl, generation=GenerationSettings(max_new_tokens=8))
    # Make the model say end-of-sequence at once: zero output weights and a bias on the eos logit.
    head = cap.model.lm_head
    eos = cap.eos_token_ids[0]
    new_head = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        new_head.weight.zero_()
        new_head.bias.zero_()
        new_head.bias[eos] = 10.0
    cap.model.lm_head = new_head
    results = cap.caption(_clips(synthetic_data)[:2])
    assert all(r.finished and r.num_tokens == 1 and r.text == "" for r in results)


def test_generation_settings_and_backend_checks(tiny_qwen2vl, tiny_llava, synthetic_data, tmp_path):
    with pytest.raises(ValueError, match="does not belong to backend 'llava'"):
        VLMCaptioner.from_pretrained(tiny_qwen2vl, backend="llava")
    with pytest.raises(ValueError, match="unknown VLM backend"):
        VLMCaptioner.from_pretrained(tiny_qwen2vl, backend="blip")
    with pytest.raises(ValueError, match="cannot load a model config"):
        VLMCaptioner.from_pretrained(tmp_path / "no-model-here")
    assert GenerationSettings().generate_kwargs() == {"max_new_tokens": 256, "do_sample": False, "num_beams": 1,
                                                      "repetition_penalty": 1.05}
    assert GenerationSettings(do_sample=True, temperature=0.5, top_p=0.8).generate_kwargs()["top_p"] == 0.8
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)
    # beam search and sampling run through the same path; sampling is reproducible with a seed
    clips = _clips(synthetic_data)[:2]
    beams = VLMCaptioner.from_pretrained(tiny_llava, generation=GenerationSettings(max_new_tokens=5, num_beams=2))
    assert all(r.num_tokens == 5 for r in beams.caption(clips))
    sampler = VLMCaptioner.from_pretrained(
        tiny_qwen2vl, generation=GenerationSettings(max_new_tokens=6, do_sample=True, temperature=1.0))
    torch.manual_seed(1)
    a = [r.text for r in sampler.caption(clips)]
    torch.manual_seed(1)
    assert [r.text for r in sampler.caption(clips)] == a


def test_clip_validation():
    with pytest.raises(ValueError, match=r"clip x: frames must be an \(F, H, W, 3\) uint8"):
        Clip("x", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="an image has 1 frame"):
        Clip("x", np.zeros((2, 8, 8, 3), np.uint8), is_image=True)


@pytest.mark.gpu
def test_qwen2vl_on_gpu_bf16(tiny_qwen2vl, synthetic_data):
    cap = VLMCaptioner.from_pretrained(tiny_qwen2vl, dtype="auto", device="cuda",
                                       generation=GenerationSettings(max_new_tokens=8))
    assert cap.device.type == "cuda" and next(cap.model.parameters()).dtype in (torch.bfloat16, torch.float16)
    results = cap.caption(_clips(synthetic_data))
    assert all(r.error is None and r.num_tokens >= 1 for r in results)
