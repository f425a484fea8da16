"""`vrsjax train-grpo` end to end: the demo recipe on a synthetic ReVOS-format dataset and a tiny checkpoint."""

import json

from vrsjax.cli import main
from vrsjax.data.synthetic import write_dataset
from vrsjax.models import qwen2_5_vl
from vrsjax.testing import write_tiny_checkpoint


def test_train_grpo_from_the_demo_recipe(tmp_path, capsys):
    model = write_tiny_checkpoint(tmp_path / "tiny")
    write_dataset(tmp_path / "data", 2, 0)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train-grpo",
                "config=configs/demo.yaml",
                f"worker.actor.model.model_path={model}",
                f"worker.actor.model.tokenizer_path={model}",
                f"data.train_files={tmp_path / 'data'}",
                f"trainer.save_checkpoint_path={run}",
                "trainer.max_steps=1",
                "data.max_response_length=8",
                "worker.reward.sam2_config=hiera_t",
                "worker.reward.sam2_image_size=256",
                "worker.reward.sam2_device=cpu",
            ]
        )
        == 0
    )
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "reward/format_mean" in json.loads(lines[0])
    assert (run / "curves.png").exists() and (run / "checkpoints").is_dir()
    assert "with SAM2 hiera_t (random weights)" in capsys.readouterr().out
    assert "reward/consistency_mean" in json.loads(lines[0])
    qwen2_5_vl.from_pretrained(run / "hf")  # the exported policy loads back


def test_train_grpo_with_xmem_propagation(tmp_path, capsys):
    model = write_tiny_checkpoint(tmp_path / "tiny")
    write_dataset(tmp_path / "data", 2, 0)
    run = tmp_path / "run"
    args = [
        f"worker.actor.model.model_path={model}",
        f"data.train_files={tmp_path / 'data'}",
        f"trainer.save_checkpoint_path={run}",
        "trainer.max_steps=1",
        "data.max_response_length=8",
        "data.keyframe_resize=64",
        "worker.reward.sam2_config=hiera_t",
        "worker.reward.sam2_image_size=256",
        "worker.reward.sam2_device=cpu",
        "worker.reward.propagator=xmem",
    ]
    assert main(["train-grpo", "config=configs/demo.yaml", *args]) == 0
    assert "propagated with xmem" in capsys.readouterr().out
    assert "reward/consistency_mean" in json.loads((run / "metrics.jsonl").read_text().splitlines()[0])


def test_xmem_propagation_for_the_reward():
    """The reward's propagate(keyframe, boxes): SAM2 keyframe masks, XMem both ways, objects OR-ed."""
    import numpy as np

    from vrsjax.rl.trainer import GRPOSample, xmem_propagate_for
    from vrsjax.services.sam2 import SAM2Service
    from vrsjax.services.xmem import XMem, masks_from_probs

    frames = np.random.default_rng(0).integers(0, 255, (4, 112, 112, 3), np.uint8)
    sample = GRPOSample("s", "x", frames, [0, 1, 2, 3], np.zeros((4, 112, 112), bool), [[[0, 0, 0, 0]]] * 4)
    sam = SAM2Service("hiera_t", device="cpu", image_size=256)
    propagate = xmem_propagate_for(sam, XMem.random(0), masks_from_probs)(sample)
    masks = propagate(2, [[10, 10, 60, 60], [50, 50, 100, 100]])
    assert masks.shape == (4, 112, 112) and masks.dtype == bool
