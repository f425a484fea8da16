"""`vrsjax demo --quick` produces every artifact of the full demo (the learning check itself is `make demo`), and
the demo's SFT conversations tokenize exactly like the GRPO prompts the policy is then trained on."""

import json

import numpy as np
import pytest

from vrsjax import demo
from vrsjax.data.synthetic import write_dataset
from vrsjax.demo_setup import build_samples, conversation, write_checkpoint
from vrsjax.processing import Processor
from vrsjax.processing.prompts import veason_prompt
from vrsjax.sft.data import encode_conversation


def test_sft_conversations_share_the_grpo_prompt_tokens(tmp_path):
    write_dataset(tmp_path / "data", 4, 0, num_frames=(6, 7), sft=False)
    train = build_samples(tmp_path / "data", "train", 4, 112, 0, whole_video=False)
    ckpt = write_checkpoint(tmp_path / "ckpt", train, bpe_size=600, seed=0, hidden_size=64, text_layers=1)
    proc = Processor.from_pretrained(ckpt)
    for d in train[:3]:
        ex = encode_conversation(proc, conversation(d), list(d.sample.frames))
        prompt = proc(text=[veason_prompt(d.sample.expression, d.sample.frame_ids)], images=list(d.sample.frames))
        ids = prompt["input_ids"][0]
        np.testing.assert_array_equal(ex.input_ids[: len(ids)], ids)
        assert not ex.response_mask[: len(ids)].any() and ex.response_mask[len(ids) :].all()
        answer = proc.tokenizer.decode(ex.input_ids[ex.response_mask].tolist())
        assert answer.startswith("<think>") and '"keyframe_timestamp": ' in answer and answer.endswith("<|im_end|>\n")


@pytest.mark.slow
def test_quick_demo_writes_every_artifact(tmp_path):
    result = demo.run(tmp_path / "out", quick=True)
    out = result["out"]
    assert result["passed"] is None  # quick mode: no learning check
    phases = [json.loads(line)["phase"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    for phase in ("eval/before_sft", "eval/after_sft", "eval/after_grpo", "sft", "sft/format_check", "grpo"):
        assert phase in phases, phase
    report = (out / "report.md").read_text()
    for row in ("| before SFT | colour_track |", "| after SFT | colour_track |", "| after GRPO | colour_track |"):
        assert row in report
    assert "random weights" in report and "Learning check" in report and "standard error" in report
    for component in ("format", "keyframe", "spatial", "consistency", "score"):
        assert (out / f"reward_{component}.png").stat().st_size > 5_000, component
    assert (out / "grpo" / "curves.png").exists() and (out / "sft" / "sft_curves.png").exists()
    gifs = sorted((out / "gifs").glob("*.gif"))
    assert gifs and all(g.read_bytes()[:6] == b"GIF89a" for g in gifs)
    for phase in ("before_sft", "after_sft", "after_grpo"):
        records = json.loads((out / f"eval_{phase}.json").read_text())["records"]
        assert records and all(0 <= r["colour_track"]["J&F"] <= 100 for r in records)
