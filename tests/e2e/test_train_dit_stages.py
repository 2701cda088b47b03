"""train_dit --stage image from a checkpoint with other latent channels, with a resolution schedule that
switches bucket sizes mid-run, resumed across the switch exactly; --bucket-by token_length batches."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ea_data.batches import video_loader

from .conftest import load_app


@pytest.mark.slow
def test_image_stage_adapts_channels_and_resumes_across_resolution_switch(tmp_path, tiny_shards, tiny_models):
    from ea_dit import VideoDiT, VideoDiTConfig

    torch.manual_seed(2)
    init = VideoDiT(VideoDiTConfig.tiny(in_channels=8, caption_channels=32))  # the tiny VAE makes 4 channels
    with torch.no_grad():
        for p in init.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.02)
    init.save_pretrained(tmp_path / "init")
    app = load_app("train_dit")

    def run(out, steps):
        return app.train(app.parse_args([
            "--data", str(tiny_shards), "--vae", str(tiny_models["vae"]), "--text-encoder",
            str(tiny_models["text_encoder"]), "--dit", str(tmp_path / "init"), "--stage", "image", "--out", str(out),
            "--steps", str(steps), "--resolution-schedule", "32:0,64:1", "--save-every", "1", "--log-every", "1",
            "--sample-steps", "0", "--no-tensorboard", "--batch-size", "2", "--image-frames"]))  # video-only shards

    whole = run(tmp_path / "a", 2)
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["base_size"] for r in rows] == [32, 64]
    final = VideoDiT.from_pretrained(whole)
    assert final.config.in_channels == 4 and final.config.out_channels == 8
    before, after = init.state_dict(), final.state_dict()
    for k, v in after.items():
        if ".motion_module." in k:  # frozen in the image stage
            assert torch.equal(v, before[k]), k
        elif k.startswith(("patch_embed.proj.", "final_layer.linear.")):
            assert v.shape != before[k].shape or k == "patch_embed.proj.bias"  # re-initialised for 4 channels
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("blocks.0.attn."))

    run(tmp_path / "b", 1)  # stopped at the switch, then resumed: the 64-px loader starts as in one go
    resumed = run(tmp_path / "b", 2)
    wa, wb = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)


def test_token_length_buckets_from_train_dit_flags(tiny_shards):
    app = load_app("train_dit")
    cfg = app.parse_args(["--bucket-by", "token_length", "--token-budget", str(9 * 32 * 32), "--batch-size", "2"])
    loader = video_loader(tiny_shards, batch_size=cfg.batch_size, frames=9, stride=1, size=64,
                                 image_video_ratio=None, seed=0, num_workers=0, bucket_by=cfg.bucket_by,
                                 token_budget=cfg.token_budget)
    c = loader.dataset.config
    assert c.bucket_by == "token_length" and c.token_budget == 9 * 32 * 32 and max(c.resolutions) == 64
    batch = next(iter(loader))
    b, _, f, h, w = batch["pixel_values"].shape
    # batch x frames x pixels stays near batch_size x budget (one sample may not fill a whole budget)
    print("token batch", b, f, h, w)
    assert b * f * h * w <= 2 * 9 * 32 * 32 * 1.5 and b >= 1
