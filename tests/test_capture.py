"""``paro capture`` on a small randomly initialised CogVideoX transformer (needs the capture extra: torch and
diffusers; run with `make test-capture`, not part of `make test`)."""

import json

import numpy as np
import pytest

from paro.flows.cli import main
from paro.sw.plan import load_plan, load_plan_set

pytestmark = pytest.mark.capture

#: A CogVideoX transformer small enough for a CPU test: 2 layers, 2 heads of d = 32.
SMALL = {"num_attention_heads": 2, "attention_head_dim": 32, "in_channels": 4, "out_channels": 4,
         "time_embed_dim": 32, "text_embed_dim": 16, "num_layers": 2, "sample_width": 16, "sample_height": 8,
         "sample_frames": 9, "patch_size": 2, "temporal_compression_ratio": 4, "max_text_seq_length": 8}
SHAPE = ["--frames", "3", "--height", "8", "--width", "16", "--text-tokens", "8"]


@pytest.fixture()
def small_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMALL))
    return path


def test_captured_qkv_are_what_attention_used(small_config, tmp_path):
    """Attention recomputed from the captured Q/K/V equals the block's attention output, bit for bit in
    float32; the model is restored afterwards."""
    import torch
    from paro.flows.capture import AttentionCapture, load_transformer
    model = load_transformer(config=small_config)
    block = model.transformer_blocks[1].attn1
    original, sdpa = block.processor, torch.nn.functional.scaled_dot_product_attention
    generator = torch.Generator().manual_seed(3)
    video, text = torch.randn(1, 96, 64, generator=generator), torch.randn(1, 8, 64, generator=generator)
    with AttentionCapture(model, tmp_path / "cap", layers=[1]) as capture, torch.no_grad():
        model(hidden_states=torch.randn(1, 3, 4, 8, 16, generator=generator),
              encoder_hidden_states=torch.randn(1, 8, 16, generator=generator), timestep=torch.tensor([500]))
        capture.layer, capture.step = 1, 7                     # a direct call of the block's attention
        out_video, out_text = block.processor(block, video, text)
        capture.layer = None
    assert block.processor is original and torch.nn.functional.scaled_dot_product_attention is sdpa
    captured = np.load(tmp_path / "cap" / "step0007_layer001.npz")
    q, k, v = (torch.from_numpy(captured[name])[None] for name in ("q", "k", "v"))
    assert q.shape == (1, 2, 8 + 96, 32)
    with torch.no_grad():
        again = block.to_out[0](sdpa(q, k, v).transpose(1, 2).reshape(1, 104, 64))
    assert torch.equal(again[:, 8:], out_video) and torch.equal(again[:, :8], out_text)
    assert sorted(p.name for p in (tmp_path / "cap").glob("*.npz")) == ["step0000_layer001.npz",
                                                                       "step0007_layer001.npz"]


def test_capture_then_calibrate_a_multi_layer_multi_step_plan(small_config, tmp_path, capsys):
    folder = tmp_path / "captures"
    assert main(["capture", "--config", str(small_config), *SHAPE, "--num-steps", "4", "-o", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "wrote 8 captures" in out and "--grid 3,4,8 --text-tokens 8" in out
    steps = [np.load(folder / f"step{s:04d}_layer000.npz")["q"] for s in range(4)]
    assert steps[0].shape == (2, 104, 32) and not np.allclose(steps[0], steps[3])   # the timestep changes Q
    assert not np.allclose(steps[0], np.load(folder / "step0000_layer001.npz")["q"])
    plan_path = tmp_path / "plans.npz"
    assert main(["calibrate", "--captures", str(folder), "--grid", "3,4,8", "--text-tokens", "8", "--block-size",
                 "16", "--step-groups", "2", "--density", "0.5", "--avg-bits", "3",
                 "-o", str(plan_path)]) == 0
    plan_set = load_plan_set(plan_path)
    assert [(e["layer"], e["steps"]) for e in plan_set.entries] == [(0, [0, 1]), (0, [2, 3]), (1, [0, 1]),
                                                                    (1, [2, 3])]
    assert load_plan(plan_path, layer=1, step=2).heads == 2


def test_capture_errors_are_one_line(small_config, tmp_path, capsys):
    folder = tmp_path / "c"
    for argv, message in [
        (["--config", str(small_config), *SHAPE, "--layers", "5"], "--layers must be in [0, 1]"),
        (["--config", str(small_config), *SHAPE, "--num-steps", "2", "--steps", "3"], "--steps must be in [0, 1]"),
        ([*SHAPE], "give --transformer DIR (a saved model) or --config JSON"),
        (["--transformer", str(tmp_path / "none"), *SHAPE], "transformer folder"),
        (["--config", str(small_config), "--frames", "3", "--height", "7", "--width", "16", "--text-tokens", "8"],
         "must be multiples of the patch size 2"),
    ]:
        assert main(["capture", *argv, "-o", str(folder)]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paro: error:")]
        assert len(errors) == 1 and message in errors[0], (argv, errors)


def test_saved_transformer_folder_loads(small_config, tmp_path):
    from paro.flows.capture import load_transformer
    model = load_transformer(config=small_config, seed=4)
    model.save_pretrained(tmp_path / "transformer")
    loaded = load_transformer(transformer=tmp_path / "transformer")
    first = dict(model.named_parameters())
    assert all(np.array_equal(p.detach().numpy(), first[n].detach().numpy()) for n, p in loaded.named_parameters())
