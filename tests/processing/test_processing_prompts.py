"""Prompt builders byte for byte against the seed systems' construction, answer parsers, coordinate transforms."""

import numpy as np
import pytest

from vrsjax.processing import coords, prompts

VEASON_EXPECTED_USER = (
    "(0s)<image>, (4s)<image>, (9s)<image>, (13s)<image>, (18s)<image>, (22s)<image> \n"
    "You are given 6 frames uniformly sampled from a 1 FPS video. Each image is preceded by its timestamp.\n"
    "Given the following expression: 'the dog running on the grass', identify the timestamp where the target is best "
    "represented. Then, locate the target in that frame by predicting the bounding box(es).\n"
    "First, output the thinking process in <think> </think> tags, and then output the result in the following format "
    "within <answer> </answer> tags."
)
FRAME_IDS = [0, 4, 9, 13, 18, 22]


def _veason_reference(tokenizer, expression, frame_ids):
    """Veason-R1's dataset code path (revos_keyframe_sft_dataset_mod.py), with transformers' tokenizer."""
    user_prompt = (
        "<video> " + "\n" + "You are given {num} frames uniformly sampled from a 1 FPS video. Each image is preceded "
        "by its timestamp." + "\n" + "Given the following expression: '{Question}', identify the timestamp where the "
        "target is best represented. Then, locate the target in that frame by predicting the bounding box(es)."
        + "\n"
        + "First, output the thinking process in <think> </think> tags, and then output the result in the following "
        "format within <answer> </answer> tags."
    )
    replace_sent = ", ".join(f"({frame_ids[i]}s){'<image>'}" for i in range(len(frame_ids)))
    user_prompt = user_prompt.replace("<video>", replace_sent)
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": user_prompt.format(num=str(len(frame_ids)), Question=expression.lower().strip(".")),
        },
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt.replace("<image>", "<|vision_start|><|image_pad|><|vision_end|>")


def test_veason_prompt_byte_for_byte(hf_auto):
    expression = "The dog running on the grass."
    assert prompts.veason_user_prompt(expression, FRAME_IDS) == VEASON_EXPECTED_USER
    ours = prompts.veason_prompt(expression, FRAME_IDS)
    assert ours == _veason_reference(hf_auto.tokenizer, expression, FRAME_IDS)
    assert ours.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n(0s)")
    assert ours.endswith("<answer> </answer> tags.<|im_end|>\n<|im_start|>assistant\n")
    assert ours.count("<|image_pad|>") == 6
    for odd in ("A {curly} 'quoted' Thing...", "...", "  Spaces. "):
        assert prompts.veason_prompt(odd, [3, 15]) == _veason_reference(hf_auto.tokenizer, odd, [3, 15])


def test_veason_prompt_through_processor(proc, hf_pil):
    frames = np.random.default_rng(0).integers(0, 256, (3, 560, 560, 3), dtype=np.uint8)
    text = prompts.veason_prompt("a cat", [0, 5, 10])
    ours = proc(text=text, images=list(frames))
    ref = hf_pil(text=[text], images=list(frames), return_tensors="np")
    assert np.array_equal(ours["input_ids"], ref["input_ids"])
    assert ours["image_grid_thw"].tolist() == [[1, 40, 40]] * 3  # 400 tokens per 560x560 frame
    assert (ours["input_ids"] == proc.image_token_id).sum() == 1200


def test_vision_reasoner_prompt_byte_for_byte(hf_auto):
    text = prompts.vision_reasoner_text('The red car?"!.')
    assert text == (
        'Please find "the red car" with bboxs and points.Compare the difference between object(s) and find the most '
        "closely matched object(s).Output the thinking process in <think> </think> and final answer in <answer> "
        "</answer> tags.Output the bbox(es) and point(s) inside the interested object(s) in JSON format.i.e., <think> "
        'thinking process here </think><answer>[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, {"bbox_2d": '
        '[225,296,706,786], "point_2d": [302,410]}]</answer>'
    )
    message = [{"role": "user", "content": [{"type": "image", "image": "x.jpg"}, {"type": "text", "text": text}]}]
    assert prompts.vision_reasoner_prompt('The red car?"!.') == hf_auto.apply_chat_template(
        message, tokenize=False, add_generation_prompt=True
    )
    assert prompts.vision_reasoner_text("A dog.", strip=".") == prompts.vision_reasoner_text("a dog")


def test_parse_veason_answer():
    ok = '<think>here</think>\n<answer>{"keyframe_timestamp": 9, "bbox_2d_list": [[100, 200, 300, 400.7]]}</answer>'
    keyframe, boxes = prompts.parse_veason_answer(ok, width=1280, height=720)
    expected = [
        int(100 * 1280 / 560 + 0.5),
        int(200 * 720 / 560 + 0.5),
        int(300 * 1280 / 560 + 0.5),
        int(400.7 * 720 / 560 + 0.5),
    ]
    assert (keyframe, boxes) == (9, [expected])
    single = "<answer>{'keyframe_timestamp': '4', 'bbox_2d_list': 'x', 'bbox_2d': [0, 0, 560, 560]}</answer>"
    assert prompts.parse_veason_answer(single, 100, 50) == (4, [[0, 0, 100, 50]])
    for bad in (
        "no answer",
        "<answer>{bad json}</answer>",
        '<answer>{"keyframe_timestamp": 1, "bbox_2d_list": []}</answer>',
        '<answer>{"bbox_2d_list": [[1, 2, 3, 4]]}</answer>',
        '<answer>{"keyframe_timestamp": 1, "bbox_2d_list": [[1, 2]]}</answer>',
    ):
        assert prompts.parse_veason_answer(bad, 640, 480) == (0, [[0, 0, 0, 0]])


def test_parse_vision_reasoner_answer():
    text = '<answer>[{"bbox_2d": [10, 20, 30, 40], "point_2d": [15, 25]}]</answer>'
    boxes, points = prompts.parse_vision_reasoner_answer(text, width=1680, height=420)
    assert boxes == [[int(10 * 2 + 0.5), int(20 * 0.5 + 0.5), 60, 20]] and points == [[30, 13]]
    assert prompts.parse_vision_reasoner_answer("<answer>[{'bbox_2d': 1}]</answer>", 840, 840) == ([], [])


def test_videoseg_prompts_and_parsers():
    text = prompts.videoseg_interval_text("the man who opens the door", [0, 30, 60], duration=90)
    assert text.startswith("(0s)<image>, (30s)<image>, (60s)<image>\n") and "'the man who opens the door'" in text
    full = prompts.videoseg_prompt(prompts.videoseg_percent_text("dog", [10, 11]))
    assert full.count("<|image_pad|>") == 2 and full.endswith("<|im_start|>assistant\n")
    assert prompts.parse_interval("<think>x</think><answer>[3.5, 10]</answer>") == (3.5, 10.0)
    assert prompts.parse_interval("<answer>12s to 4s</answer>") == (4.0, 12.0)
    assert prompts.parse_interval('<answer>{"start": 1, "end": 2}</answer>') == (1.0, 2.0)
    for bad in ("<answer>soon</answer>", "<answer>[1, 2, 3]</answer>", "<answer>[-1, 2]</answer>"):
        assert prompts.parse_interval(bad) is None
    assert prompts.parse_percent("<answer>40%</answer>") == pytest.approx(0.4)
    assert prompts.parse_percent("<answer>0.25</answer>") == 0.25
    assert prompts.parse_percent("<answer>75</answer>") == 0.75
    assert prompts.parse_percent("<answer>150%</answer>") is None and prompts.parse_percent("none") is None
    assert prompts.mean_interval([(0, 10), None, (4, 20)]) == (2.0, 15.0) and prompts.mean_interval([None]) is None
    assert prompts.target_frame(100, 50, [0.2, None, 0.4, 0.9], top_m=2) == 100 + int(50 * 0.3)
    assert prompts.target_frame(0, 10, [1.0]) == 9 and prompts.target_frame(5, 10, []) == 10


def test_coordinate_transforms():
    box = np.array([[100.0, 200.0, 300.0, 400.0]])
    assert coords.to_original(box, 1280, 720).tolist() == [[229, 257, 686, 514]]
    assert coords.to_original([280, 280], 100, 100).tolist() == [50, 50]
    np.testing.assert_array_equal(coords.to_square([[64, 36, 1280, 720]], 1280, 720), [[28.5, 28.5, 560.5, 560.5]])
    assert coords.rescale([10, 20, 30, 40], (100, 200), (50, 400)).tolist() == [20, 10, 60, 20]
    assert coords.rescale([1.2, 3.7], (10, 10), (10, 10), round_half_up=True).tolist() == [1, 4]
    with pytest.raises(ValueError, match="2 .* or 4"):
        coords.to_original([1, 2, 3], 10, 10)


def test_mask_boxes_like_veason():
    masks = np.zeros((3, 72, 128), bool)
    masks[0, 10:20, 30:50] = True
    masks[2, 0:1, 127:128] = True
    boxes = coords.mask_boxes(masks)
    xf, yf = 560 / 128, 560 / 72
    assert boxes[0] == [30 * xf + 0.5, 10 * yf + 0.5, 49 * xf + 0.5, 19 * yf + 0.5]
    assert boxes[1] == [0, 0, 0, 0] and boxes[2] == [127 * xf + 0.5, 0.5, 127 * xf + 0.5, 0.5]
    assert coords.mask_boxes(np.zeros((2, 5, 5))) == [[0, 0, 0, 0]]


def test_frame_resizes_like_the_references():
    from PIL import Image

    from vrsjax.processing import fit_pixels, resize_square

    frames = np.random.default_rng(3).integers(0, 256, (2, 72, 128, 3), dtype=np.uint8)
    square = resize_square(frames, 560)
    assert square.shape == (2, 560, 560, 3)
    assert np.array_equal(square[1], np.asarray(Image.fromarray(frames[1]).resize((560, 560), Image.BILINEAR)))
    vr = np.asarray(Image.fromarray(frames[0]).resize((840, 840), Image.BILINEAR))  # VisionReasoner
    assert np.array_equal(resize_square(frames[0], 840), vr)
    big = fit_pixels(square[0], min_pixels=1000, max_pixels=100_000)  # 313600 px > max: NEAREST by sqrt(max/area)
    factor = (100_000 / 560**2) ** 0.5
    assert big.shape == (int(560 * factor), int(560 * factor), 3)
    assert fit_pixels(square[0], 262144, 4194304).shape == (560, 560, 3)  # Veason-R1's bounds: unchanged
