"""TFDS ArrayRecord builds and grain pipelines: exact round trip, determinism, resume from a saved iterator state,
disjoint shards per process, worker processes (run in a subprocess with a timeout so a hang fails, not stalls)."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vrsjax.data import DataError, examples
from vrsjax.data import transforms as T
from vrsjax.data.pipeline import eval_dataset, restore_state, state_to_bytes, train_dataset
from vrsjax.data.records import build_records, open_records, record_object_masks
from vrsjax.data.revos import read_revos

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"  # pycocotools on numpy 2
)


def _key(example):
    return example["video"], example["exp_id"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_records_masks_bit_for_bit(synth, revos_train, records_dir):
    records = open_records(records_dir)
    assert len(records) == len(revos_train) and records.metadata["dataset"] == "revos"
    for i, sample in enumerate(revos_train):
        record = records.expressions[i]
        assert record["video"].decode() == sample.video and record["exp_id"].decode() == sample.exp_id
        frames = list(range(sample.num_frames))
        np.testing.assert_array_equal(
            record_object_masks(record, frames), synth.expression_masks(sample.video, sample.exp_id)
        )
        np.testing.assert_array_equal(record["areas"], T.union_areas(sample.union_masks()))
        start = int(record["frame_start"])
        with open(sample.frame_paths[-1], "rb") as f:
            assert records.frames[start + sample.num_frames - 1]["jpeg"] == f.read()


def test_pipeline_examples_equal_direct_reading(revos_train, records_dir):
    by_key = {(s.video, s.exp_id): s for s in revos_train}
    kept = [s for s in revos_train if s.type_id != 2]
    batches = _take(iter(train_dataset(records_dir, batch_size=4, seed=3, shard=(0, 1), num_epochs=1)), len(kept) // 4)
    seen = [e for batch in batches for e in batch]
    assert len({_key(e) for e in seen}) == len(seen) == len(kept) // 4 * 4
    for example in seen:
        direct = examples.train_example(by_key[_key(example)], None, keyframe=example["keyframe"])
        _assert_same(example, direct)
        assert example["keyframe"] in T.top_area_frames(T.union_areas(by_key[_key(example)].union_masks()))


def test_deterministic_per_seed(records_dir):
    def first(seed):
        batches = _take(iter(train_dataset(records_dir, batch_size=3, seed=seed, shard=(0, 1))), 4)
        return [_key(e) for batch in batches for e in batch]

    assert first(5) == first(5)
    assert first(5) != first(6)


def make_train(records_dir):
    return train_dataset(records_dir, batch_size=3, seed=11, shard=(0, 1))


def test_resume_gives_the_next_unseen_batch(records_dir):
    uninterrupted = _take(iter(make_train(records_dir)), 9)  # crosses an epoch boundary (the shard has < 27 samples)
    for k in (2, 7):
        iterator = iter(make_train(records_dir))
        _take(iterator, k)
        state = state_to_bytes(iterator)
        json.loads(state)  # stored in checkpoints as JSON
        resumed = restore_state(iter(make_train(records_dir)), state)
        for a, b in zip(next(resumed), uninterrupted[k], strict=True):
            _assert_same(a, b)


def test_shards_are_disjoint(revos_train, records_dir):
    kept = sum(s.type_id != 2 for s in revos_train)
    per_shard = kept // 3
    keys = []
    for index in range(3):
        ds = train_dataset(records_dir, batch_size=1, seed=0, shard=(index, 3), num_epochs=1, shuffle=False)
        keys.append({_key(e) for b in ds for e in b})
        assert len(keys[-1]) == per_shard
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    with pytest.raises(ValueError, match="outside"):
        train_dataset(records_dir, batch_size=1, shard=(3, 3))
    # shard=None asks JAX: one process here, so the whole (filtered) index
    assert len(next(iter(train_dataset(records_dir, batch_size=kept, seed=0, num_epochs=1)))) == kept


def test_eval_dataset_order_and_sampling(revos_train, records_dir):
    batches = list(eval_dataset(records_dir, batch_size=4))
    got = [e for b in batches for e in b]
    assert [_key(e) for e in got] == [(s.video, s.exp_id) for s in revos_train]
    assert len(batches[-1]) == len(revos_train) - 4 * (len(batches) - 1)
    for example, sample in zip(got[:5], revos_train, strict=False):
        _assert_same(example, examples.inference_example(sample))


# grain 0.2.18 may wait up to 25 s per worker when closing an mp_prefetch iterator; the script kills its workers.
WORKER_SCRIPT = """
import hashlib, multiprocessing, os, pickle, sys
from vrsjax.data.pipeline import train_dataset, state_to_bytes, restore_state
make = lambda w: train_dataset(sys.argv[1], batch_size=3, seed=2, shard=(0, 1), num_workers=w, worker_buffer_size=2)
def digest(batch):
    return hashlib.sha256(pickle.dumps([(e["video"], e["exp_id"], e["frames"].tobytes(), e["gt_masks"].tobytes())
                                        for e in batch])).hexdigest()
it = iter(make(2))
first = [digest(next(it)) for _ in range(3)]
state = state_to_bytes(it)
fourth = digest(next(it))
resumed = restore_state(iter(make(2)), state)
assert digest(next(resumed)) == fourth
serial = iter(make(0))
assert [digest(next(serial)) for _ in range(4)] == first + [fourth]
print("ok", flush=True)
for process in multiprocessing.active_children():
    process.kill()
    process.join()
os._exit(0)
"""


def test_worker_processes_match_in_process(records_dir):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WORKER_SCRIPT), str(records_dir)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_truncated_jpeg_is_an_error_or_a_counted_skip(synth, tmp_path, caplog):
    root = tmp_path / "revos"
    shutil.copytree(synth.root, root)
    sample = read_revos(root, "train")[0]
    for path in sample.frame_paths:  # header intact (the reader accepts it), pixel data cut short
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 3])
    records_dir = build_records(read_revos(root, "train"), tmp_path / "records")
    video = sample.video
    strict = train_dataset(records_dir, batch_size=1, seed=0, shard=(0, 1), num_epochs=1, shuffle=False)
    with pytest.raises(DataError, match=f"video {video!r}"):
        list(strict)
    lenient = train_dataset(
        records_dir, batch_size=1, seed=0, shard=(0, 1), num_epochs=1, shuffle=False, skip_bad_samples=True
    )
    with caplog.at_level("WARNING", logger="vrsjax.data"):
        kept = [e for b in lenient for e in b]
    skipped = sum(s.video == video and s.type_id != 2 for s in read_revos(root, "train"))
    assert (
        all(e["video"] != video for e in kept)
        and len(kept) == sum(s.type_id != 2 for s in read_revos(root, "train")) - skipped
    )
    assert sum("skipping a sample" in r.message for r in caplog.records) == skipped


@pytest.mark.parametrize("layout", ["mevis", "refytvos", "davis17", "reasonvos", "image_json"])
def test_every_format_builds_and_streams(synth, tmp_path, layout):
    from vrsjax.data import open_dataset
    from vrsjax.data.synthetic_layouts import write_layout

    write_layout(synth, layout, tmp_path / layout)
    root = tmp_path / layout / "refcoco_like.json" if layout == "image_json" else tmp_path / layout
    dataset = open_dataset(layout, root, "train" if layout in ("mevis", "refytvos") else None)
    records = open_records(build_records(dataset, tmp_path / "records"))
    for i, sample in enumerate(dataset):
        np.testing.assert_array_equal(
            record_object_masks(records.expressions[i], list(range(sample.num_frames))),
            sample.object_masks(),
            err_msg=sample.key,
        )
    example = next(iter(eval_dataset(tmp_path / "records", batch_size=1)))[0]
    _assert_same(example, examples.inference_example(dataset[0]))
