"""Export, sharding, dtypes and bad input for the Qwen2.5-VL port."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec
from qwen_cases import IMG, hf_logits, hf_model, make_batch, text, vision_block

from vrsjax.models import qwen2_5_vl
from vrsjax.parallel.mesh import make_mesh


def image_batch():
    return make_batch([text(3, 0) + vision_block(IMG, (1, 6, 10)) + text(4, 1), text(6, 2)], images=[(1, 6, 10)])


@pytest.mark.parametrize("layout", ["v5", "legacy"])
def test_export_round_trip(tiny_dirs, tmp_path, layout):
    model = qwen2_5_vl.from_pretrained(tiny_dirs["untied"])
    out = model.save_pretrained(tmp_path / "export", layout=layout)
    batch = image_batch()
    want = hf_logits(hf_model(tiny_dirs["untied"]), batch)
    again = hf_logits(hf_model(out), batch)  # transformers reads what we wrote
    valid = batch["attention_mask"].astype(bool)
    assert np.abs(again - want)[valid].max() <= 1e-5
    assert np.abs(np.asarray(qwen2_5_vl.from_pretrained(out)(**batch)) - want)[valid].max() <= 1e-4


def test_sharded_matches_single_device(tiny_dirs):
    assert len(jax.devices()) == 8
    batch = image_batch()
    single = np.asarray(qwen2_5_vl.from_pretrained(tiny_dirs["untied"])(**batch))
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    sharded = qwen2_5_vl.from_pretrained(tiny_dirs["untied"], mesh=mesh)
    q = sharded.model.language_model.layers[0].self_attn.q_proj.weight.get_value()
    assert q.sharding.spec == PartitionSpec("tensor", "fsdp")
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (32, 16)
    assert sharded.lm_head.weight.get_value().sharding.spec == PartitionSpec("tensor", "fsdp")
    valid = batch["attention_mask"].astype(bool)
    assert np.abs(np.asarray(sharded(**batch)) - single)[valid].max() <= 1e-5


def test_bfloat16_within_documented_bound(tiny_dirs):
    """bf16 params and compute: logits within 5% of the logit range of float32 (documented in the README)."""
    batch = image_batch()
    f32 = np.asarray(qwen2_5_vl.from_pretrained(tiny_dirs["legacy"])(**batch))
    bf16 = np.asarray(qwen2_5_vl.from_pretrained(tiny_dirs["legacy"], dtype="bfloat16")(**batch), np.float32)
    valid = batch["attention_mask"].astype(bool)
    assert np.abs(bf16 - f32)[valid].max() <= 0.05 * np.ptp(f32[valid])


def test_xla_attention_backend_matches_reference(tiny_dirs):
    batch = image_batch()
    ref = np.asarray(qwen2_5_vl.from_pretrained(tiny_dirs["legacy"])(**batch))
    xla = np.asarray(qwen2_5_vl.from_pretrained(tiny_dirs["legacy"], attention="xla")(**batch))
    valid = batch["attention_mask"].astype(bool)
    assert np.abs(xla - ref)[valid].max() <= 1e-5


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_and_corrupt_files(tiny_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        qwen2_5_vl.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((tiny_dirs["legacy"] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="safetensors"):
        qwen2_5_vl.from_pretrained(tmp_path)
    data = (tiny_dirs["legacy"] / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        qwen2_5_vl.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        qwen2_5_vl.from_pretrained(tmp_path)


def test_other_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ValueError, match="model_type='llama'"):
        qwen2_5_vl.from_pretrained(tmp_path)


def test_mismatched_weights_reported_together(tiny_dirs, tmp_path):
    cfg = json.loads((tiny_dirs["legacy"] / "config.json").read_text())
    cfg["text_config"]["num_hidden_layers"] = 3
    cfg["text_config"]["intermediate_size"] = 100
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((tiny_dirs["legacy"] / "model.safetensors").read_bytes())
    with pytest.raises(ValueError) as err:
        qwen2_5_vl.from_pretrained(tmp_path)
    msg = str(err.value)
    assert "missing" in msg and "layers.2.mlp.up_proj.weight" in msg
    assert "wrong shape" in msg and "model.layers.0.mlp.up_proj.weight" in msg


def test_feature_token_mismatch_names_the_sample(tiny_dirs):
    model = qwen2_5_vl.from_pretrained(tiny_dirs["legacy"])
    batch = make_batch([text(3, 0), text(2, 1) + vision_block(IMG, (1, 6, 10))[:-5]], images=[(1, 6, 10)])
    with pytest.raises(ValueError, match=r"sample 1: 11 image pad tokens .* truncated"):
        model(**batch)


def test_grid_inconsistent_with_pixels(tiny_dirs):
    model = qwen2_5_vl.from_pretrained(tiny_dirs["legacy"])
    batch = image_batch()
    batch["image_grid_thw"] = np.array([[1, 6, 12]])
    with pytest.raises(ValueError, match="describes 72 patches but pixel_values has 60 rows"):
        model(**batch)
    batch["image_grid_thw"] = np.array([[1, 5, 12]])
    with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
        model(**batch)
