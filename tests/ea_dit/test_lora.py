"""LoRA adapters: only adapters train, merged == unmerged, scale 0 == base model, adapter-only files."""

import pytest
import torch
from safetensors.torch import load_file

from ea_dit import VideoDiT, VideoDiTConfig
from ea_dit.lora import add_lora, load_lora, lora_parameters, merge_lora, save_lora, set_lora_scale


def _model():
    torch.manual_seed(0)
    model = VideoDiT(VideoDiTConfig.tiny())
    with torch.no_grad():  # a "trained" base: no zero layers
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.02)
    return model


def _inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, 4, 2, 8, 8, generator=g), torch.tensor([10, 500]), torch.randn(2, 5, 32, generator=g))


def test_only_adapters_train_and_file_holds_only_them(tmp_path):
    model = _model()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    names = add_lora(model, rank=4)
    assert len(names) == 7 * model.config.depth
    params = lora_parameters(model)
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(*_inputs()).square().mean().backward()
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items())  # base weights untouched (weight decay too)
    ups = [k for k in after if ".lora_up." in k]
    assert ups and all(after[k].abs().max() > 0 for k in ups)  # adapters moved off their zero init
    path = save_lora(model, tmp_path / "a.safetensors", rank=4, alpha=4, targets=("attn.qkv",))
    assert set(load_file(path)) == {k for k in after if ".lora_" in k}


def test_merged_equals_unmerged_and_scale_zero_is_base(tmp_path):
    model = _model()
    x = _inputs()
    with torch.no_grad():
        base_out = model(*x)
    add_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(0, 0.1)
        path = save_lora(model, tmp_path / "a.safetensors", 4, 8, ("attn.qkv", "attn.proj", "cross_attn.q",
                                                                    "cross_attn.kv", "cross_attn.proj", "mlp.fc1",
                                                                    "mlp.fc2"))
        adapted = model(*x)
        assert (adapted - base_out).abs().max() > 1e-3  # the adapters do something
        set_lora_scale(model, 0.0)
        torch.testing.assert_close(model(*x), base_out, rtol=0, atol=0)
        # Loaded on a fresh copy of the base at scale 0.5, then merged: same output as unmerged.
        other = _model()
        load_lora(other, path, scale=0.5)
        unmerged = other(*x)
        merge_lora(other)
        assert not any(".lora_" in k for k in other.state_dict())
        merged = other(*x)
        # merged weights differ from the two-matmul path only by float rounding of W + dW
        torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
        assert (unmerged - base_out).abs().max() > 1e-4
    with pytest.raises(ValueError, match="no linear layer"):
        add_lora(_model(), 2, targets=("nope",))
