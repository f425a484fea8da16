"""CoT SFT on a tiny model: the loss falls, LoRA trains only LoRA, accumulation is exact, the mesh changes nothing,
resume is exact, and merge + export reproduces the merged model's logits in vrsjax and in transformers."""

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from sft_cases import sft_config, write_conversations

from vrsjax.layers.lora import LoRAParam
from vrsjax.models import qwen2_5_vl
from vrsjax.parallel.mesh import make_mesh
from vrsjax.processing import Processor
from vrsjax.sft.data import collate, load_examples
from vrsjax.sft.trainer import SFTTrainer
from vrsjax.testing import TINY_IDS, write_tiny_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    tiny = write_tiny_checkpoint(root / "tiny", seed=0)
    data = write_conversations(root / "data")
    cfg = sft_config(tiny, data, root / "probe")
    examples, _ = load_examples(cfg, Processor.from_pretrained(tiny))
    return tiny, data, examples


def make(setup, tmp_path, mesh=None, **overrides):
    tiny, data, examples = setup
    cfg = sft_config(tiny, data, tmp_path / "run", **overrides)
    return SFTTrainer(cfg, qwen2_5_vl.from_pretrained(tiny), examples, mesh=mesh)


def flat_state(model_or_state, kind=nnx.Param):
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state, kind)
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(state)}


@pytest.mark.parametrize("kind,drop", [("full", 0.85), ("lora", 0.97)])  # LoRA starts at B = 0: slower
def test_loss_falls_on_a_fixed_batch(setup, tmp_path, kind, drop):
    # global batch 2 x 2 = the 4 conversations: every step sees the same batch
    trainer = make(
        setup, tmp_path, finetuning_type=kind, gradient_accumulation_steps=2, max_steps=6, learning_rate=1e-2
    )
    history = trainer.train()
    losses = [m["loss"] for m in history]
    assert all(np.isfinite(losses)) and np.all(np.diff(losses) < 0) and losses[-1] < drop * losses[0], losses
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 6
    assert (tmp_path / "run" / "sft_curves.png").stat().st_size > 10_000


def test_lora_touches_only_lora_params(setup, tmp_path):
    trainer = make(setup, tmp_path, max_steps=2)
    before_frozen, before_lora = flat_state(trainer.frozen), flat_state(trainer.params)
    assert before_lora and all("lora_" in k for k in before_lora)
    assert not any(isinstance(v, LoRAParam) for v in jax.tree.leaves(trainer.frozen, is_leaf=lambda x: True))
    trainer.train()
    after_model = flat_state(trainer.policy(), nnx.Param)
    moved = [k for k, v in flat_state(trainer.params).items() if np.abs(v - before_lora[k]).max() > 0]
    assert any("lora_b" in k for k in moved) and any("lora_a" in k for k in moved)
    lora_free = {k: v for k, v in after_model.items() if "lora_" not in k}
    assert lora_free.keys() == {k for k in before_frozen if "lora_" not in k}
    for k, v in lora_free.items():
        np.testing.assert_array_equal(v, before_frozen[k], err_msg=k)


def test_full_fine_tuning_keeps_the_vision_tower_frozen(setup, tmp_path):
    trainer = make(setup, tmp_path, finetuning_type="full", max_steps=1)
    before = flat_state(trainer.policy())
    trainer.train()
    after = flat_state(trainer.policy())
    vision = [k for k in before if "'visual'" in k]
    assert vision and all(np.array_equal(before[k], after[k]) for k in vision)
    assert any(not np.array_equal(before[k], after[k]) for k in before if "'language_model'" in k)


def test_accumulation_is_exact_and_the_mesh_changes_nothing(setup, tmp_path):
    batch = setup[2]
    whole = make(setup, tmp_path / "a", per_device_train_batch_size=4)
    split = make(setup, tmp_path / "b", per_device_train_batch_size=1, gradient_accumulation_steps=4)
    mesh = make_mesh(data=1, fsdp=4, tensor=1, devices=jax.devices()[:4])
    sharded = make(setup, tmp_path / "c", mesh=mesh, per_device_train_batch_size=1)
    assert whole.global_batch == split.global_batch == sharded.global_batch == 4
    for t in (whole, split, sharded):  # non-zero lora_b, so that every LoRA factor gets a gradient
        t.params = jax.tree.map(lambda x: x + 0.05, t.params)
    results = [t.accumulate(batch) for t in (whole, split, sharded)]
    assert all(r[3] == results[0][3] for r in results)  # response tokens
    ref = flat_state(results[0][0])
    for grads, loss, _, _ in results[1:]:
        np.testing.assert_allclose(loss, results[0][1], rtol=1e-6)
        for k, v in flat_state(grads).items():
            np.testing.assert_allclose(v, ref[k], atol=1e-6, rtol=1e-5, err_msg=k)


@pytest.mark.slow
def test_resume_continues_exactly(setup, tmp_path):
    straight = make(setup, tmp_path / "straight", max_steps=3, lora_dropout=0.1)
    straight.train()
    first = make(setup, tmp_path / "resumed", max_steps=3, lora_dropout=0.1)
    first.train(2)
    first.save()
    second = make(setup, tmp_path / "resumed", max_steps=3, lora_dropout=0.1)
    second.train(resume=True)
    assert second.step_count == 3 and second.data_position == straight.data_position
    ref = flat_state(straight.params)
    for k, v in flat_state(second.params).items():
        np.testing.assert_allclose(v, ref[k], atol=1e-7, err_msg=k)


def test_lora_dropout_only_with_a_key():
    from vrsjax.layers.linear import Linear
    from vrsjax.layers.lora import add_lora

    class Net(nnx.Module):
        def __init__(self):
            kw = dict(use_bias=False, axes=("embed", "mlp"), dtype=np.float32, param_dtype=np.float32)
            self.q_proj = Linear(8, 8, rngs=nnx.Rngs(0), **kw)

    net = add_lora(Net(), 2, 4.0, "q_proj")
    layer = net.q_proj
    layer.lora_b.set_value(np.ones((8, 2), np.float32))
    layer.lora_dropout = 0.5
    x = np.ones((3, 8), np.float32)
    plain = np.asarray(layer(x))
    layer.lora_dropout_key = nnx.data(jax.random.key(0))
    dropped = np.asarray(layer(x))
    assert not np.allclose(dropped, plain)
    layer.lora_dropout = 0.0  # rate 0: the key changes nothing
    np.testing.assert_array_equal(np.asarray(layer(x)), plain)


def hf_logits(path, inputs_np):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, attn_implementation="eager").eval()
    ids = inputs_np["input_ids"]
    kwargs = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs_np.items()}
    kwargs["mm_token_type_ids"] = torch.from_numpy(np.where(ids == TINY_IDS["image_token_id"], 1, 0))
    with torch.no_grad():
        return model(**kwargs).logits.numpy()


@pytest.mark.slow
def test_merge_and_export_give_the_trained_model_logits(setup, tmp_path):
    trainer = make(setup, tmp_path, max_steps=3, lora_target="q_proj,v_proj,down_proj", learning_rate=1e-2)
    trainer.train()
    lora_b = [np.abs(v).max() for k, v in flat_state(trainer.params).items() if "lora_b" in k]
    assert min(lora_b) > 0  # the adapters carry something to merge
    examples = setup[2][:2]
    inputs, _, _ = collate(trainer.model.config, examples)
    out = trainer.export(tmp_path / "hf")
    assert (out / "tokenizer.json").exists() and (out / "preprocessor_config.json").exists()
    Processor.from_pretrained(out)  # the export is a complete checkpoint
    ids = inputs.input_ids.astype(np.int64)
    batch = {
        "input_ids": ids,
        "attention_mask": inputs.attention_mask.astype(np.int64),
        "pixel_values": np.concatenate([e.pixel_values for e in examples]),
        "image_grid_thw": np.concatenate([e.image_grid_thw for e in examples]),
    }
    want = np.asarray(trainer.policy()(**batch))  # LoRA applied on the fly
    valid = batch["attention_mask"].astype(bool)
    got = np.asarray(qwen2_5_vl.from_pretrained(out)(**batch))
    assert np.abs(got - want)[valid].max() <= 1e-4
    assert np.abs(hf_logits(out, batch) - want)[valid].max() <= 1e-4
