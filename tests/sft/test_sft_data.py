"""SFT data and config: LLaMA-Factory's qwen2_vl segments and labels, bad samples named, the recipe keys."""

import json
import warnings

import numpy as np
import pytest
from sft_cases import sft_config, write_conversations

from vrsjax.config import ConfigError, IgnoredKeysWarning
from vrsjax.data.errors import DataError
from vrsjax.data.sft import read_sharegpt
from vrsjax.processing import Processor
from vrsjax.processing.chat import render_chat
from vrsjax.sft.config import load_sft_config
from vrsjax.sft.data import collate, conversation_segments, encode_conversation, load_examples
from vrsjax.testing import TINY_IDS, write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("sftdata") / "tiny", seed=0)


def test_segments_render_the_qwen_chat_template(tmp_path):
    samples, _ = read_sharegpt(write_conversations(tmp_path))
    for sample in samples:
        text = "".join(t for t, _ in conversation_segments(sample))
        messages = [{"role": t.role, "content": t.content} for t in sample.turns]
        assert text == render_chat(messages)  # the checkpoint's template, default system prompt added
        assert [train for _, train in conversation_segments(sample)] == [False, True] * (len(sample.turns) // 2)


def test_labels_are_the_answers_with_im_end(tiny, tmp_path):
    proc = Processor.from_pretrained(tiny)
    samples, _ = read_sharegpt(write_conversations(tmp_path))
    sample = samples[1]  # two exchanges
    images = sample.read_images(56)
    ex = encode_conversation(proc, sample, list(images))
    trained = proc.tokenizer.decode(ex.input_ids[ex.response_mask].tolist())
    assert trained == "".join(t.content + "<|im_end|>\n" for t in sample.turns[1::2])
    assert (ex.input_ids == TINY_IDS["image_token_id"]).sum() == 4  # 56 x 56: 2 x 2 merged tokens
    assert ex.image_grid_thw.tolist() == [[1, 4, 4]]
    inputs, targets, weights = collate(proc_config(tiny), [ex, encode_conversation(proc, samples[0], [images[0]])])
    assert inputs.input_ids.shape[1] % 32 == 0 and targets.shape == weights.shape
    row = inputs.input_ids[0]
    np.testing.assert_array_equal(targets[0][weights[0] > 0], row[1:][weights[0] > 0])
    assert weights[0].sum() == ex.num_response_tokens


def proc_config(tiny):
    from vrsjax.models.qwen2_5_vl import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig.from_hf_dict(json.loads((tiny / "config.json").read_text()))


def test_missing_image_names_the_sample(tiny, tmp_path):
    path = write_conversations(tmp_path)
    records = json.loads(path.read_text())
    records[2]["images"] = ["nowhere.png"]
    path.write_text(json.dumps(records))
    cfg = sft_config(tiny, path, tmp_path / "out")
    with pytest.raises(DataError, match=r"'conv2'.*nowhere\.png.*missing"):
        load_examples(cfg, Processor.from_pretrained(tiny))
    examples, skipped = load_examples(sft_config(tiny, path, tmp_path / "o", skip_bad_samples=True),
                                      Processor.from_pretrained(tiny))  # fmt: skip
    assert [e.id for e in examples] == ["conv0", "conv1", "conv3"] and skipped.total == 1


def test_conversation_without_assistant_turn_names_the_sample(tiny, tmp_path):
    path = write_conversations(tmp_path)
    records = json.loads(path.read_text())
    records[1]["conversations"] = records[1]["conversations"][:1]
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"'conv1'.*does not end with an assistant turn"):
        load_examples(sft_config(tiny, path, tmp_path / "out"), Processor.from_pretrained(tiny))


def test_over_long_sample_is_named_not_truncated(tiny, tmp_path):
    path = write_conversations(tmp_path)
    with pytest.raises(DataError, match=r"'conv0'.*exceed cutoff_len=20"):
        load_examples(sft_config(tiny, path, tmp_path / "out", cutoff_len=20), Processor.from_pretrained(tiny))


def test_dataset_info_names_resolve(tiny, tmp_path):
    path = write_conversations(tmp_path / "data")
    info = {"mine": {"file_name": "sft.json", "formatting": "sharegpt", "columns": {"messages": "conversations"}}}
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps(info))
    cfg = sft_config(tiny, path, tmp_path / "out", dataset="mine", max_samples=2)
    examples, _ = load_examples(cfg, Processor.from_pretrained(tiny))
    assert [e.id for e in examples] == ["conv0", "conv1"]
    with pytest.raises(FileNotFoundError, match="'theirs'.*datasets there: mine"):
        load_examples(sft_config(tiny, path, tmp_path / "out", dataset="theirs"), Processor.from_pretrained(tiny))


def test_config_keys_defaults_and_errors():
    cfg = load_sft_config("configs/sft_veason_3b.yaml")
    assert (cfg.finetuning_type, cfg.template, cfg.lora_target) == ("lora", "qwen2_vl", "all")
    assert cfg.lora_alpha == 2 * cfg.lora_rank and cfg.cutoff_len == 4096
    default = load_sft_config(None, ["dataset_dir=d"])
    assert default.media_dir == "d" and default.lora_alpha == 16 and default.lr_scheduler_type == "linear"
    assert load_sft_config(None, ["lora_rank=4", "lora_alpha=32"]).lora_alpha == 32
    with pytest.raises(ConfigError, match="lora_rnk: unknown key; did you mean lora_rank"):
        load_sft_config(None, ["lora_rnk=4"])
    with pytest.raises(ConfigError, match="lr_scheduler_type.*did you mean cosine"):
        load_sft_config(None, ["lr_scheduler_type=cosin"])
    with pytest.raises(ConfigError, match="finetuning_type"):
        load_sft_config(None, ["finetuning_type=freeze"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_sft_config(None, ["deepspeed=ds_z2.json", "preprocessing_num_workers=16"])
    assert any(issubclass(w.category, IgnoredKeysWarning) and "deepspeed" in str(w.message) for w in caught)


@pytest.mark.slow
def test_train_sft_command_trains_and_exports(tiny, tmp_path):
    from vrsjax import cli

    path = write_conversations(tmp_path / "data")
    args = [f"model_name_or_path={tiny}", f"dataset={path}", f"media_dir={path.parent}", "image_resize=56"]
    args += [
        f"output_dir={tmp_path / 'run'}",
        "max_steps=2",
        "per_device_train_batch_size=2",
        "lora_target=q_proj,v_proj",
        "save_steps=1",
    ]
    assert cli.main(["train-sft", "config=configs/sft_veason_3b.yaml", *args, "bf16=false"]) == 0
    run = tmp_path / "run"
    assert (run / "hf" / "model.safetensors").exists() and (run / "hf" / "tokenizer.json").exists()
    assert (run / "metrics.jsonl").read_text().count("\n") == 2 and (run / "sft_curves.png").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["1", "2"]
