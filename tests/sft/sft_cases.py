"""Helpers shared by the SFT tests: a tiny checkpoint and short ShareGPT conversations with images on disk."""

import json

import numpy as np
from PIL import Image

from vrsjax.sft.config import load_sft_config

ANSWERS = [
    '<think>red square, left</think>\n<answer>{"keyframe_timestamp": 0, "bbox_2d_list": [[10,20,30,40]]}</answer>',
    '<think>blue circle, right</think>\n<answer>{"keyframe_timestamp": 5, "bbox_2d_list": [[1,2,3,4]]}</answer>',
    "<think>two boxes</think>\n<answer>[1, 2]</answer>",
    "<think>a dog</think>\n<answer>[3]</answer>",
]


def write_conversations(root, records=None, count=4):
    """root/sft.json with `count` one- or two-turn conversations over 56x56 PNG images; returns the file."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if records is None:
        records = []
        for i in range(count):
            name = f"img{i}.png"
            Image.fromarray(rng.integers(0, 255, (56, 56, 3), np.uint8)).save(root / name)
            turns = [
                {"from": "human", "value": f"<image>Where is object {i}?"},
                {"from": "gpt", "value": ANSWERS[i % len(ANSWERS)]},
            ]
            if i % 2:  # a second exchange: every assistant turn is trained on
                turns += [{"from": "human", "value": "And then?"}, {"from": "gpt", "value": "It stays."}]
            records.append({"id": f"conv{i}", "conversations": turns, "images": [name]})
    path = root / "sft.json"
    path.write_text(json.dumps(records))
    return path


def sft_config(tiny_dir, data_file, out_dir, **overrides):
    values = {
        "model_name_or_path": str(tiny_dir),
        "dataset": str(data_file),
        "dataset_dir": str(data_file.parent),
        "image_resize": 56,
        "per_device_train_batch_size": 2,
        "max_steps": 4,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "output_dir": str(out_dir),
        "finetuning_type": "lora",
        "lora_rank": 4,
        **overrides,
    }
    return load_sft_config(None, [f"{k}={v}" for k, v in values.items()])
