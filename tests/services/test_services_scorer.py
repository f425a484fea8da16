"""RewardScorer in process: Veason-R1 scores with SAM2's masks equal direct calls, in submission order; SAM2 failures
take the fallback (counted, logged); the queue is bounded; waiting is bounded; caller errors name the group."""

import threading

import numpy as np
import pytest
from sam2_cases import BOXES, RESPONSES, SAM2_TEST_OPTIONS, reference_scores, veason_group

from vrsjax.rewards import registry, veason, vision_reasoner
from vrsjax.rewards.scorer import RewardGroup, RewardScorer, SAM2Options, propagation_jobs, score_group
from vrsjax.services.sam2 import SAM2Service

pytestmark = [
    pytest.mark.filterwarnings("ignore:cannot import name '_C'"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.usefixtures("one_torch_thread"),
]

OPTIONS = SAM2Options(**SAM2_TEST_OPTIONS)


@pytest.fixture(scope="module")
def scorer():
    with RewardScorer(sam2=OPTIONS) as scorer:
        yield scorer


@pytest.fixture
def blocking_reward():
    """A registered reward that waits for an event: lets a test hold the scoring thread."""
    release = threading.Event()

    def reward(response: str, release: threading.Event) -> float:
        release.wait(30)
        return float(len(response))

    registry.register("test_services_blocking", reward, release=release)
    yield release
    release.set()
    registry.unregister("test_services_blocking")


def test_propagation_jobs_are_what_veason_asks_sam2():
    jobs = propagation_jobs(veason_group(), registry.lookup("video_match_keyframe_sft_sam_mod"))
    assert [None if job is None else job["keyframe"] for job in jobs] == [2, 0, 4, None, None, 2, None]
    np.testing.assert_array_equal(jobs[1]["boxes"], BOXES[:1])  # only matched boxes (one GT box), in answer order


def test_scores_equal_direct_calls_in_submission_order(scorer, sam2_service):
    groups = [veason_group(), veason_group(RESPONSES[:2]), veason_group(RESPONSES[2:5])]
    result = scorer.score(groups, timeout=120)
    expected = np.concatenate([reference_scores(group, sam2_service) for group in groups])
    np.testing.assert_array_equal(result.scores, expected)
    assert result.scores.dtype == np.float32 and result.group_sizes == (7, 2, 3)
    assert not result.sam2_failed.any()
    assert expected.max() > 3  # format, keyframe, spatial and a real consistency term
    counters = scorer.counters()
    assert counters["groups_scored"] >= 3 and counters["sam2_jobs"] >= 3 + 2 + 1


def test_sam2_failure_takes_the_fallback(monkeypatch, caplog):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (test)")

    with RewardScorer(sam2=OPTIONS, retries=1, consistency_fallback=0.25) as scorer:
        monkeypatch.setattr(SAM2Service, "propagate", out_of_memory)
        result = scorer.score([veason_group()], timeout=60)
        counters = scorer.counters()
    group = veason_group()
    np.testing.assert_array_equal(result.scores, reference_scores(group, fallback_for_matched=0.25))
    assert result.sam2_failed.tolist() == [True, True, True, False, False, True, False]
    assert counters["sam2_jobs"] == 4 and counters["sam2_errors"] == 8 and counters["sam2_retries"] == 4
    assert counters["sam2_fallbacks"] == 4
    assert "CUDA out of memory (test)" in caplog.text


def test_without_sam2_every_matched_response_takes_the_fallback():
    with RewardScorer(sam2=None, consistency_fallback=0.5) as scorer:
        result = scorer.score([veason_group()], timeout=30)
    np.testing.assert_array_equal(result.scores, reference_scores(veason_group(), fallback_for_matched=0.5))
    assert result.sam2_failed.sum() == 4


def test_ablation_without_the_sam2_term_builds_no_sam2():
    with RewardScorer("ablation_keyframe_sft_sam_mod_compute_score", sam2=OPTIONS) as scorer:
        result = scorer.score([veason_group()], timeout=30)
        assert "sam2_jobs" not in scorer.counters()
    expected = [veason.score(r, **veason_group().fields, consistency_weight=0.0) for r in RESPONSES]
    np.testing.assert_array_equal(result.scores, np.asarray(expected, dtype=np.float32))


def test_rewards_without_sam2():
    gt = [{"bbox_2d": [10, 10, 30, 30], "point_2d": [20, 20]}]
    responses = ['<think>x</think><answer>[{"bbox_2d": [11, 10, 30, 31], "point_2d": [19, 21]}]</answer>', "nothing"]
    with RewardScorer("vision_reasoner", sam2=None) as scorer:
        result = scorer.score([RewardGroup(responses, {"gt_objects": gt})], timeout=30)
    expected = [vision_reasoner.score(r, gt) for r in responses]
    np.testing.assert_array_equal(result.scores, np.asarray(expected, dtype=np.float32))


def test_submit_returns_at_once_and_result_waits(blocking_reward):
    with RewardScorer("test_services_blocking", sam2=None) as scorer:
        pending = scorer.submit([RewardGroup(["ab", "abc"]), RewardGroup(["x"])])
        assert not pending.done()
        with pytest.raises(TimeoutError, match="not ready after 0.1s: 0/2 groups"):
            pending.result(timeout=0.1)
        blocking_reward.set()
        np.testing.assert_array_equal(pending.result(timeout=10).scores, [2, 3, 1])


def test_the_queue_is_bounded(blocking_reward):
    with RewardScorer("test_services_blocking", sam2=None, max_pending=1, submit_timeout_s=0.2) as scorer:
        scorer.submit([RewardGroup(["held by the scoring thread"])])
        deadline = threading.Event()
        while scorer.counters()["queue_size"] and not deadline.wait(0.01):
            pass
        scorer.submit([RewardGroup(["waits in the queue"])])
        with pytest.raises(TimeoutError, match="queue stayed full"):
            scorer.submit([RewardGroup(["no room"])])
        assert scorer.counters()["queue_high_water"] == 1
        blocking_reward.set()


def test_close_cancels_what_is_still_queued(blocking_reward):
    scorer = RewardScorer("test_services_blocking", sam2=None)
    pending = scorer.submit([RewardGroup(["a"]), RewardGroup(["b"]), RewardGroup(["c"])])
    threading.Timer(0.3, blocking_reward.set).start()
    scorer.close()
    with pytest.raises(RuntimeError, match="closed before this batch"):
        pending.result(timeout=10)
    with pytest.raises(RuntimeError, match="closed"):
        scorer.submit([RewardGroup(["d"])])


def test_a_broken_group_names_its_index(scorer):
    broken = RewardGroup(["x"], {"gt_masks": np.zeros((1, 2, 2))})  # gt_boxes and frame_ids missing
    with pytest.raises(RuntimeError, match="failed on group 1 of its batch"):
        scorer.score([veason_group(RESPONSES[:1]), broken], timeout=60)


def test_score_group_is_usable_alone(sam2_service):
    group = veason_group(RESPONSES[:3])
    run = lambda frames, jobs: [sam2_service.propagate(frames, job["keyframe"], job["boxes"]) for job in jobs]  # noqa: E731
    scores, failed = score_group(group, registry.lookup("video_match_keyframe_sft_sam_mod"), run)
    np.testing.assert_array_equal(scores.astype(np.float32), reference_scores(group, sam2_service))
    assert not failed.any()


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: RewardGroup("one string"), TypeError),
        (lambda: RewardGroup(["a", 3]), TypeError),
        (lambda: RewardGroup(["a", "b"], response_fields=[{}]), ValueError),
        (lambda: RewardScorer(mode="remote", sam2=None), ValueError),
        (lambda: RewardScorer(workers=0, sam2=None), ValueError),
        (lambda: RewardScorer("no_such_reward", sam2=None), KeyError),
    ],
)
def test_bad_arguments(make, error):
    with pytest.raises(error):
        make()
