"""Qwen2.5-VL logits and submodules against transformers (float32, eager attention) on tiny random models."""

import numpy as np
import pytest
import torch
from qwen_cases import IMG, VID, hf_logits, hf_model, make_batch, text, vision_block

from vrsjax.models import qwen2_5_vl
from vrsjax.models.qwen2_5_vl.inputs import prepare_inputs
from vrsjax.models.qwen2_5_vl.vision import vision_layout

GRID_ODD = (1, 30, 44)  # merged 15 x 22: not a multiple of the 4 x 4 merged-token window
GRID_VIDEO = (2, 8, 12)  # 4 frames


def cases():
    img, vid = vision_block(IMG, GRID_ODD), vision_block(VID, GRID_VIDEO)
    return {
        "text_left_padded": make_batch([text(9, 0), text(4, 1), text(7, 2)]),
        "image_odd_grid": make_batch([text(3, 3) + img + text(5, 4)], images=[GRID_ODD]),
        "video_4_frames": make_batch([text(4, 5) + vid + text(6, 6)], videos=[GRID_VIDEO], second_per_grid_ts=[1.5]),
        "image_and_video": make_batch(
            [text(2, 7) + vision_block(IMG, (1, 4, 6)) + text(3, 8) + vid + text(2, 9)],
            images=[(1, 4, 6)],
            videos=[GRID_VIDEO],
            second_per_grid_ts=[0.5],
        ),
        "batch_of_images": make_batch(
            [
                text(2, 10) + vision_block(IMG, (1, 8, 8)) + text(2, 11),
                text(5, 12) + vision_block(IMG, (1, 6, 10)) + vision_block(IMG, (1, 4, 4)),
            ],
            images=[(1, 8, 8), (1, 6, 10), (1, 4, 4)],
        ),
        "long_video_fast_fps": make_batch(
            [text(3, 13) + vision_block(VID, (6, 4, 4)) + text(3, 14)],
            videos=[(6, 4, 4)],
            second_per_grid_ts=[2.0 / 3.0],
        ),
    }


@pytest.fixture(scope="module")
def models(tiny_dirs):
    return {name: (qwen2_5_vl.from_pretrained(d), hf_model(d)) for name, d in tiny_dirs.items()}


@pytest.mark.parametrize("case", list(cases()))
@pytest.mark.parametrize("layout", ["legacy", "v5", "untied"])
def test_logits_match_transformers(models, case, layout):
    ours, ref = models[layout]
    batch = cases()[case]
    got = np.asarray(ours(**batch))
    want = hf_logits(ref, batch)
    valid = batch["attention_mask"].astype(bool)
    assert np.abs(got - want)[valid].max() <= 1e-4


@pytest.mark.parametrize("case", list(cases()))
def test_rope_index_matches_transformers(models, case):
    _, ref = models["legacy"]
    b = cases()[case]
    if "image_grid_thw" not in b and "video_grid_thw" not in b:
        pytest.skip("transformers uses plain arange positions without vision grids")
    ids = b["input_ids"]
    want_pos, want_delta = ref.model.get_rope_index(
        torch.from_numpy(ids),
        torch.from_numpy(np.where(ids == IMG, 1, np.where(ids == VID, 2, 0))),
        *(
            torch.from_numpy(b[k]) if k in b else None
            for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")
        ),
    )
    pos, delta = qwen2_5_vl.get_rope_index(
        ids,
        b["attention_mask"],
        b.get("image_grid_thw"),
        b.get("video_grid_thw"),
        b.get("second_per_grid_ts"),
        image_token_id=IMG,
        video_token_id=VID,
    )
    valid = b["attention_mask"].astype(bool)
    np.testing.assert_array_equal(pos[:, valid], want_pos.numpy()[:, valid])
    np.testing.assert_array_equal(delta, want_delta.numpy().reshape(-1))


@pytest.mark.parametrize("grids", [[GRID_ODD], [GRID_VIDEO, (1, 4, 6)], [(3, 10, 2), (1, 2, 2)]])
def test_vision_tower_matches_transformers(models, grids):
    ours, ref = models["legacy"]
    n = sum(t * h * w for t, h, w in grids)
    pixels = np.random.default_rng(0).normal(size=(n, 1176)).astype(np.float32)
    layout = vision_layout(np.array(grids), ours.config.vision)
    padded = np.pad(pixels, ((0, layout.pos_hw.shape[0] - n), (0, 0)))
    got = np.asarray(ours.model.visual(padded, layout))[: n // 4]
    with torch.no_grad():
        want = ref.model.visual(torch.from_numpy(pixels), grid_thw=torch.tensor(grids)).pooler_output.numpy()
    assert np.abs(got - want).max() <= 1e-5


def test_decoder_layer_matches_transformers(models):
    ours, ref = models["legacy"]
    batch = cases()["video_4_frames"]
    inputs = prepare_inputs(ours.config, **batch)
    x = np.random.default_rng(1).normal(size=(*batch["input_ids"].shape, 64)).astype(np.float32)
    from vrsjax.layers.rotary import mrope_cos_sin
    from vrsjax.models.qwen2_5_vl.text import causal_padding_mask

    t = ours.config.text
    cos, sin = mrope_cos_sin(inputs.position_ids, t.head_dim, t.rope_theta, t.mrope_section, np.float32)
    got = np.asarray(ours.model.language_model.layers[0](x, cos, sin, causal_padding_mask(inputs.attention_mask))[0])
    length = x.shape[1]
    additive = torch.triu(torch.full((length, length), torch.finfo(torch.float32).min), 1)[None, None]
    rotary = ref.model.language_model.rotary_emb
    with torch.no_grad():
        pe = rotary(torch.from_numpy(x), torch.from_numpy(np.asarray(inputs.position_ids, np.int64)))
        np.testing.assert_allclose(np.asarray(cos), pe[0].numpy(), atol=1e-6)
        want = ref.model.language_model.layers[0](
            torch.from_numpy(x), attention_mask=additive, position_embeddings=pe
        ).numpy()
    assert np.abs(got - want).max() <= 1e-5
