"""Vision per row (`rows.py`) embeds exactly as the flat patch sequence: same features at the same tokens, for
prompts of different image counts, and repeated rows (a prompt on several devices) carry their own copy."""

import numpy as np
import pytest

from vrsjax.models import qwen2_5_vl
from vrsjax.models.qwen2_5_vl.inputs import prepare_inputs
from vrsjax.models.qwen2_5_vl.rows import is_per_row, per_row_vision, take_rows
from vrsjax.processing import Processor
from vrsjax.processing.processor import MODEL_KEYS
from vrsjax.testing import write_tiny_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("rows") / "tiny", seed=2, text_layers=1)
    proc, model = Processor.from_pretrained(path), qwen2_5_vl.from_pretrained(path)
    rng = np.random.default_rng(0)
    texts, frames = [], []
    for i, count in enumerate((2, 3, 0)):  # different image counts (one frame shape 56 x 84), one text-only row
        frames += [rng.integers(0, 255, (56, 84), np.uint8)[..., None].repeat(3, -1) for _ in range(count)]
        vision = "<|vision_start|><|image_pad|><|vision_end|>" * count
        texts.append("<|im_start|>user\n" + vision + "a" * (i + 1) + "<|im_end|>\n")
    batch = proc(text=texts, images=frames, padding="bucket")
    inputs = prepare_inputs(model.config, **{k: v for k, v in batch.items() if k in MODEL_KEYS})
    return model, batch, inputs


def test_per_row_vision_embeds_like_the_flat_sequence(setup):
    model, batch, inputs = setup
    rows = per_row_vision(model.config, inputs, batch["image_grid_thw"])
    assert is_per_row(rows) and rows.patches.shape[0] == 3 and rows.layout.window_slots.shape[0] == 3
    want = np.asarray(model.embed(inputs))
    assert np.abs(np.asarray(model.embed(rows)) - want).max() <= 1e-5
    repeated = take_rows(rows, np.array([1, 1, 0, 2]))
    assert np.abs(np.asarray(model.embed(repeated)) - want[[1, 1, 0, 2]]).max() <= 1e-5
