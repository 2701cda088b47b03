"""apps/train_reward on tiny local models: runs, logs every iteration, and changes only the parameters
`--train` names."""

import json

import torch
from safetensors.torch import load_file

from .conftest import load_app


class Brightness(torch.nn.Module):
    """A fixed differentiable reward: mean pixel value of the scored frames, in [-1, 1]."""

    max_reward = 1.0

    def forward(self, frames, prompts=None):
        return frames.mean(dim=(1, 2, 3))


def test_train_reward_changes_only_cross_attention(tmp_path, tiny_models):
    from ea_data.scoring.rewards import register_reward
    from ea_dit import VideoDiT, VideoDiTConfig

    torch.manual_seed(0)
    dit = VideoDiT(VideoDiTConfig.tiny(caption_channels=32))
    with torch.no_grad():  # a "trained" model: no zero-initialised layers blocking the gradient
        for p in dit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    dit.save_pretrained(tmp_path / "dit")
    register_reward("test_brightness", lambda folder, spec, device: Brightness())
    (tmp_path / "reward").mkdir()
    (tmp_path / "reward" / "reward.json").write_text(json.dumps({"kind": "test_brightness"}))
    app = load_app("train_reward")
    args = ["--dit", str(tmp_path / "dit"), "--vae", str(tiny_models["vae"]), "--text-encoder",
            str(tiny_models["text_encoder"]), "--reward", str(tmp_path / "reward"), "--prompt", "a red ball",
            "--out", str(tmp_path / "out"), "--frames", "5", "--steps", "3", "--grad-steps", "last_k",
            "--grad-k", "2", "--train", "cross_attention", "--iters", "2", "--lr", "1e-3"]
    assert app.main(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [0, 1]
    before, after = load_file(tmp_path / "dit" / "model.safetensors"), load_file(tmp_path / "out" / "dit" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".cross_attn." in k for k in changed), sorted(changed)[:5]
    assert app.main([*args[:-4], "--scored-latents", "9", "--iters", "1"]) == 2  # only 2 latents
    # LoRA (the default): only the adapters are written, and they moved away from their zero init
    lora_args = [*args[:args.index("--train")], "--train", "lora", "--lora-rank", "4", "--iters", "1",
                 "--out", str(tmp_path / "lora")]
    assert app.main(lora_args) == 0
    adapters = load_file(tmp_path / "lora" / "lora.safetensors")
    assert adapters and all(".lora_down." in k or ".lora_up." in k for k in adapters)
    assert any(v.abs().sum() > 0 for k, v in adapters.items() if ".lora_up." in k)
    assert not (tmp_path / "lora" / "dit").exists()


class ClipRecorder(torch.nn.Module):
    """A fixed clip-scoring reward (scores_video): mean absolute frame difference; records what it saw."""

    max_reward = 2.0
    scores_video = True
    seen: list = []

    def forward(self, videos, prompts):
        ClipRecorder.seen.append((tuple(videos.shape), list(prompts)))
        return (videos[:, :, 1:] - videos[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4))


def test_train_reward_scores_clips_and_draws_prompts_from_a_file(tmp_path, tiny_models):
    from ea_data.scoring.rewards import register_reward
    from ea_dit import VideoDiT, VideoDiTConfig

    torch.manual_seed(0)
    VideoDiT(VideoDiTConfig.tiny(caption_channels=32)).save_pretrained(tmp_path / "dit")
    register_reward("test_clip", lambda folder, spec, device: ClipRecorder())
    (tmp_path / "reward").mkdir()
    (tmp_path / "reward" / "reward.json").write_text(json.dumps({"kind": "test_clip"}))
    prompts = ["a red ball", "a blue box", "a green star"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n\n")
    ClipRecorder.seen.clear()
    args = ["--dit", str(tmp_path / "dit"), "--vae", str(tiny_models["vae"]), "--text-encoder",
            str(tiny_models["text_encoder"]), "--reward", str(tmp_path / "reward"), "--prompts-file",
            str(tmp_path / "prompts.txt"), "--batch-prompts", "2", "--out", str(tmp_path / "out"), "--frames", "5",
            "--steps", "2", "--scored-latents", "2", "--train", "motion", "--iters", "3", "--lr", "1e-3"]
    assert load_app("train_reward").main(args) == 0
    # forward + recomputation in the backward per iteration; the tiny VAE decodes 2 latents to 5 frames
    assert len(ClipRecorder.seen) == 6
    for shape, names in ClipRecorder.seen:
        assert shape[:3] == (2, 3, 5) and len(names) == 2 and set(names) <= set(prompts)
    assert len({tuple(n) for _, n in ClipRecorder.seen}) > 1  # different draws across iterations
    assert load_app("train_reward").main([*args[:8], "--out", str(tmp_path / "x")]) == 2  # no prompts
