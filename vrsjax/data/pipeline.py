"""grain pipelines over vrsjax records (`records.build_records`): training (Veason-R1 sampling, shuffled, repeated)
and evaluation (uniform sampling, in order, once), deterministic for a seed, sharded per JAX process, decoded in
worker processes with prefetch, and resumable: `iterator.get_state()` is a small JSON-able dict that a checkpoint
stores and `set_state` restores, after which the iterator yields the next unseen batch.

Order of operations: the (filtered) expression index is sharded statically per process (each process owns every
count-th record, the remainder dropped so that all processes see the same number), then seeded, shuffled per
epoch and repeated; the per-sample map draws its randomness from grain's per-element generator (a function of
the seed and the element's position), so worker count and prefetch depth never change what is produced.
A batch is a list of example dicts (`vrsjax.data.examples`): sampled frame counts differ between samples.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from vrsjax.data import transforms as T
from vrsjax.data.errors import DataError
from vrsjax.data.examples import assemble
from vrsjax.data.records import Records, decode_frame, open_records, record_object_masks

log = logging.getLogger("vrsjax.data")
_OPEN_LOCK = threading.Lock()


class ExpressionSource:
    """Random access to the kept expression records of a build; opens the files lazily in each process."""

    def __init__(self, root: str | Path, keep: Sequence[int]) -> None:
        self.root = str(root)
        self.keep = list(keep)
        self._records: Records | None = None

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: int) -> dict:
        return self.records.expressions[self.keep[index]]

    @property
    def records(self) -> Records:
        with _OPEN_LOCK:  # grain's read threads all ask at once; open the files once per process
            if self._records is None:
                self._records = open_records(self.root)
        return self._records

    def __getstate__(self) -> dict:
        return {"root": self.root, "keep": self.keep, "_records": None}


def record_meta(record: dict) -> dict[str, Any]:
    """The example's scalar fields from an expression record (bytes -> str)."""
    text = lambda key: record[key].decode() if isinstance(record[key], bytes) else str(record[key])  # noqa: E731
    return {
        "dataset": text("dataset"),
        "video": text("video"),
        "exp_id": text("exp_id"),
        "expression": text("expression"),
        "type_id": int(record["type_id"]),
        "height": int(record["height"]),
        "width": int(record["width"]),
        "num_video_frames": int(record["num_frames"]),
    }


class _RecordMap:
    """Shared by the training and evaluation maps: decoding the sampled frames and masks, and the error policy."""

    def __init__(
        self,
        source: ExpressionSource,
        num_frames: int,
        size: int,
        skip_bad_samples: bool,
        task: str = "veason",
        target_size: int = T.VISION_REASONER_SIZE,
    ) -> None:
        self.source, self.num_frames, self.size, self.skip = source, num_frames, size, skip_bad_samples
        self.task, self.target_size = task, target_size

    def example(self, record: dict, frame_ids: list[int], keyframe: int) -> dict:
        start = int(record["frame_start"])
        rows = self.source.records.frames.__getitems__([start + t for t in frame_ids])
        frames = np.stack([decode_frame(row["jpeg"], self.size) for row in rows])
        masks = record_object_masks(record, frame_ids) if bool(record["has_masks"]) else None
        meta = record_meta(record)
        return assemble(meta, frame_ids, keyframe, frames, masks, self.size, self.task, self.target_size)

    def guarded(self, record: dict, build: Callable[[], dict]) -> dict | None:
        """build(), with a failure raised as a DataError naming the sample, or logged and dropped (None)."""
        try:
            return build()
        except (OSError, ValueError) as error:
            meta = record_meta(record)
            error = DataError(
                f"dataset {meta['dataset']!r}, video {meta['video']!r}, expression {meta['exp_id']!r}, "
                f"file {self.source.root!r}: {error}"
            )
            if not self.skip:
                raise error from None
            log.warning("skipping a sample (data.skip_bad_samples=true): %s", error)
            return None


class TrainMap(_RecordMap, grain.transforms.RandomMap):
    """Veason-R1 training sampling on a record: keyframe among the top-5 area frames, stride sampling."""

    def random_map(self, record: dict, rng: np.random.Generator) -> dict | None:
        def build() -> dict:
            frame_ids, keyframe = T.veason_train_frame_ids(record["areas"], self.num_frames, rng)
            return self.example(record, frame_ids, keyframe)

        return self.guarded(record, build)


class EvalMap(_RecordMap, grain.transforms.Map):
    """Veason-R1 inference sampling on a record (uniform over the video, no keyframe)."""

    def map(self, record: dict) -> dict | None:
        frame_ids = T.inference_frame_ids(int(record["num_frames"]), self.num_frames)
        return self.guarded(record, lambda: self.example(record, frame_ids, -1))


def kept_records(root: str | Path, include_no_target: bool = False, min_frames: int = 1) -> list[int]:
    """Record indices to use: type_id 2 dropped unless include_no_target (Veason-R1 drops them in training)."""
    index = open_records(root).index
    return [
        i
        for i, (_, _, type_id, _, frames) in enumerate(index)
        if (include_no_target or type_id != 2) and frames >= min_frames
    ]


def shard_indices(keep: Sequence[int], shard: tuple[int, int] | None) -> list[int]:
    """This process's share: every count-th index from `index`, after dropping the remainder (equal shares).
    shard None: (jax.process_index(), jax.process_count())."""
    if shard is None:
        import jax

        shard = (jax.process_index(), jax.process_count())
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} outside [0, {count})")
    usable = len(keep) // count * count
    if usable == 0:
        raise ValueError(f"{len(keep)} records cannot be shared by {count} processes")
    return list(keep[:usable][index::count])


def train_dataset(
    root: str | Path,
    *,
    batch_size: int,
    seed: int = 1,
    num_frames: int = 6,
    size: int = T.VEASON_SIZE,
    task: str = "veason",
    target_size: int = T.VISION_REASONER_SIZE,
    include_no_target: bool = False,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard: tuple[int, int] | None = None,
    num_workers: int = 0,
    worker_buffer_size: int = 16,
    read_threads: int = 4,
    skip_bad_samples: bool = False,
) -> grain.IterDataset:
    """Batches (lists of `batch_size` examples) for Veason-R1-style training; infinite when num_epochs is None."""
    source = ExpressionSource(root, shard_indices(kept_records(root, include_no_target), shard))
    _report_build_skips(source)
    ds = grain.MapDataset.source(source).seed(seed)
    if shuffle:
        ds = ds.shuffle()
    ds = ds.repeat(num_epochs).random_map(TrainMap(source, num_frames, size, skip_bad_samples, task, target_size))
    return _finish(ds, batch_size, True, num_workers, worker_buffer_size, read_threads)


def eval_dataset(
    root: str | Path,
    *,
    batch_size: int,
    num_frames: int = 8,
    size: int = T.VEASON_SIZE,
    include_no_target: bool = True,
    shard: tuple[int, int] | None = (0, 1),
    num_workers: int = 0,
    worker_buffer_size: int = 16,
    read_threads: int = 4,
    skip_bad_samples: bool = False,
) -> grain.IterDataset:
    """One ordered pass with inference sampling; the last batch may be short. Not sharded unless asked."""
    keep = kept_records(root, include_no_target)
    source = ExpressionSource(root, keep if shard == (0, 1) else shard_indices(keep, shard))
    ds = grain.MapDataset.source(source).map(EvalMap(source, num_frames, size, skip_bad_samples))
    return _finish(ds, batch_size, False, num_workers, worker_buffer_size, read_threads)


def _finish(ds, batch_size, drop_remainder, num_workers, worker_buffer_size, read_threads) -> grain.IterDataset:  # noqa: ANN001
    ds = ds.filter(lambda example: example is not None)  # skipped samples (skip_bad_samples=true)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=max(2 * batch_size, 8)))
    if num_workers > 0:
        # Workers produce examples (worker i takes every num_workers-th one, interleaved back in order) and the
        # main process batches them, so batches do not depend on the number of workers.
        _absl_flags_parsed()
        options = grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=worker_buffer_size)
        it = it.mp_prefetch(options)
    return it.batch(batch_size, drop_remainder=drop_remainder, batch_fn=list)


def _absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app nothing parsed them, so take the defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _report_build_skips(source: ExpressionSource) -> None:
    report = source.records.metadata.get("skipped")
    if report:
        log.warning("records at %s were built without some bad samples:\n%s", source.root, report)


def state_to_bytes(iterator: grain.DatasetIterator) -> bytes:
    """The iterator's position as JSON bytes (store it with the train state; `restore_state` resumes from it)."""
    return json.dumps(iterator.get_state(), sort_keys=True).encode()


def restore_state(iterator: grain.DatasetIterator, state: bytes) -> grain.DatasetIterator:
    """Move a fresh iterator of the same pipeline to a saved position; returns it."""
    iterator.set_state(json.loads(state.decode()))
    return iterator
