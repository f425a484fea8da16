"""`vrsjax predict`: a whole dataset split through a pipeline, written in the benchmark layout for `vrsjax eval`.

Expressions are read with `vrsjax.data.open_dataset` and their masks written with `vrsjax.eval.layout.write_masks`
(`<out>/<video>/<exp_id>/<frame>.png`, each expression renamed into place only once complete). A run is resumable:
expressions whose folder is complete (`layout.is_complete`) are skipped, as the released Veason-R1 evaluation skips
existing output folders. Veason-R1 answers `batch_size` expressions per `generate` call (sharded over the mesh's
data axes when a mesh is given) and computes SAM2's image features once per video; VideoSeg-R1's sampler asks its
questions one expression at a time. Each expression's answer is appended to `<out>/answers.jsonl`; parse failures
(fallback prompts) and clipped keyframes are counted, listed in `<out>/predict_report.json` and printed at the end.
They are those of every selected expression, whichever run predicted it: read back from answers.jsonl (the latest
line of each expression), so a resumed run, even after a kill, keeps the earlier runs' failures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vrsjax.eval import layout
from vrsjax.inference import veason, videoseg
from vrsjax.inference.policy import Policy, check_checkpoint
from vrsjax.inference.result import InferenceResult
from vrsjax.inference.segmenters import SegmenterOptions
from vrsjax.progress import progress_bar

ANSWERS_FILE = "answers.jsonl"
REPORT_FILE = "predict_report.json"


@dataclass
class PredictReport:
    """Counts of one `predict` run: expressions selected, already complete (skipped), predicted now, and among all
    selected expressions (this run's and earlier runs') the parse failures and clipped keyframes (keys listed)."""

    dataset: str
    split: str
    pipeline: str
    selected: int = 0
    skipped_complete: int = 0
    predicted: int = 0
    parse_failures: list[str] = field(default_factory=list)
    keyframe_clipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"{self.dataset}/{self.split} ({self.pipeline}): {self.predicted} predicted, {self.skipped_complete} "
            f"already complete, of {self.selected}; parse failures (all runs) {len(self.parse_failures)}"
            f"{' ' + str(self.parse_failures[:10]) if self.parse_failures else ''}; "
            f"keyframes clipped {len(self.keyframe_clipped)}; {self.seconds:.1f}s"
        )


def predict(
    data: str | Path,
    out: str | Path,
    checkpoint: str | Path | None = None,
    dataset: str | None = None,
    split: str | None = None,
    pipeline: str = "veason",
    segmenters: SegmenterOptions | None = None,
    config: veason.VeasonConfig | videoseg.VideoSegConfig | None = None,
    batch_size: int = 4,
    limit: int | None = None,
    policy: Policy | None = None,
    sam=None,
    xmem=None,
    mesh=None,
    progress: bool = True,
) -> PredictReport:
    """Predict every (or the first `limit`) expression of a split that is not complete under `out` yet.

    policy / sam / xmem: already built ones (notebooks, tests); otherwise they are built from `checkpoint` and
    `segmenters`, and only when some expression is left to predict."""
    from vrsjax.data import open_dataset

    if pipeline not in ("veason", "videoseg"):
        raise ValueError(f"pipeline must be 'veason' or 'videoseg', got {pipeline!r}")
    if batch_size < 1 or (limit is not None and limit < 0):
        raise ValueError(f"batch_size ({batch_size}) must be >= 1 and limit ({limit}) >= 0")
    segmenters = segmenters or SegmenterOptions()
    start = time.perf_counter()
    split_data = open_dataset(dataset, data, split)
    samples = list(split_data)[:limit] if limit is not None else list(split_data)
    report = PredictReport(split_data.name, split_data.split, pipeline, selected=len(samples))
    pending = [s for s in samples if not layout.is_complete(out, s.video, s.exp_id, s.frame_names)]
    report.skipped_complete = len(samples) - len(pending)
    for sample in pending:  # bad expressions fail before any model loads, naming the sample
        try:
            veason.check_query(sample.expression)
        except ValueError as err:
            raise ValueError(f"{split_data.name} {sample.key}: {err}; fix the expressions file") from err
    if pending:
        config = config or (veason.VeasonConfig() if pipeline == "veason" else videoseg.VideoSegConfig())
        if policy is None and checkpoint is None:
            raise ValueError("predict needs a checkpoint directory (or a loaded policy)")
        if policy is None:
            check_checkpoint(checkpoint)
        if pipeline == "videoseg" and config.propagator == "xmem" and xmem is None:
            xmem = segmenters.build_xmem()
        sam = segmenters.build_sam2() if sam is None else sam
        policy = Policy.load(checkpoint, mesh=mesh) if policy is None else policy
        Path(out).mkdir(parents=True, exist_ok=True)
        step, cache = (batch_size if pipeline == "veason" else 1), {}
        with progress_bar(
            total=len(pending), desc=f"predict {report.dataset}", unit="expr", disable=not progress
        ) as bar:
            for i in range(0, len(pending), step):
                batch = pending[i : i + step]
                videos = _read_videos(batch)
                items = [(videos[s.video], s.expression) for s in batch]
                if pipeline == "veason":
                    results = veason.run_batch(policy, sam, items, config, cache)
                else:
                    results = [videoseg.run(policy, sam, f, q, config, xmem=xmem) for f, q in items]
                for sample, result in zip(batch, results, strict=True):
                    _save(out, sample, result, report)
                bar.update(len(batch))
    report.seconds = time.perf_counter() - start
    Path(out).mkdir(parents=True, exist_ok=True)
    report.parse_failures, report.keyframe_clipped = _answer_flags(out, samples)
    (Path(out) / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2))
    return report


def _read_videos(batch: Sequence) -> dict:
    """video id -> uint8[T, H, W, 3] full-resolution frames, read once per video of the batch."""
    videos = {}
    for sample in batch:
        if sample.video not in videos:
            try:
                videos[sample.video] = sample.read_frames()
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"{sample.dataset} {sample.key}: cannot read its frames ({err}); fix or remove the video"
                ) from err
    return videos


def _answer_flags(out: str | Path, samples: Sequence) -> tuple[list[str], list[str]]:
    """The keys of the samples whose latest answer in answers.jsonl did not parse, and of those whose keyframe
    was clipped. A line cut short by a kill is skipped (its expression is not complete, so it is predicted again)."""
    latest = {}
    path = Path(out) / ANSWERS_FILE
    for text in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            continue
        latest[(str(answer["video"]), str(answer["exp_id"]))] = answer
    answered = [(s.key, latest[key]) for s in samples if (key := (str(s.video), str(s.exp_id))) in latest]
    failures = [k for k, a in answered if not a.get("parse_ok", True)]
    clipped = [k for k, a in answered if (a.get("details") or {}).get("keyframe_clipped")]
    return failures, clipped


def _save(out: str | Path, sample, result: InferenceResult, report: PredictReport) -> None:
    layout.write_masks(out, sample.video, sample.exp_id, sample.frame_names, result.masks)
    report.predicted += 1
    line = {"video": sample.video, "exp_id": sample.exp_id, "expression": sample.expression, **result.summary()}
    line.pop("mask_pixels_per_frame")
    with open(Path(out) / ANSWERS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, default=str) + "\n")
