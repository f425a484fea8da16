"""XMem's memory math and bookkeeping against reference formulas written out here in numpy: the shrunk, selected L2
similarity, the top-k softmax, readout, soft aggregation, padding, and long-term consolidation (which elements
become prototypes, what they hold, what the working memory keeps, how usage is counted and pruned)."""

import numpy as np
import pytest
import torch

from vrsjax.services.xmem.config import XMemConfig
from vrsjax.services.xmem.inference import normalize, pad_divide_by, unpad
from vrsjax.services.xmem.memory import KeyValueStore, MemoryManager, do_softmax, get_similarity, readout
from vrsjax.services.xmem.network import aggregate

RNG = np.random.default_rng(0)


def t(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


def ref_similarity(mk, ms, qk, qe):
    """float[CK, N], float[N], float[CK, M], float[CK, M] -> float[N, M]: -sum_c e (m - q)^2 * s / sqrt(CK)."""
    d = (mk[:, :, None] - qk[:, None, :]) ** 2
    return -(qe[:, None, :] * d).sum(0) * ms[:, None] / np.sqrt(mk.shape[0])


def ref_softmax(sim, top_k=None):
    """Column-wise softmax over the memory axis of float[N, M], keeping the top_k entries of each column."""
    out = np.zeros_like(sim)
    for m in range(sim.shape[1]):
        keep = np.argsort(-sim[:, m], kind="stable")[: top_k or sim.shape[0]]
        e = np.exp(sim[keep, m] - sim[keep, m].max())
        out[keep, m] = e / e.sum()
    return out


def test_similarity_is_the_shrunk_selected_squared_distance():
    mk, qk = RNG.normal(size=(8, 30)), RNG.normal(size=(8, 12))
    ms, qe = RNG.uniform(1, 3, size=30), RNG.uniform(0, 1, size=(8, 12))
    got = get_similarity(t(mk[None]), t(ms[None, None]), t(qk[None]), t(qe[None]))[0]
    np.testing.assert_allclose(got.numpy(), ref_similarity(mk, ms, qk, qe), rtol=1e-5, atol=1e-5)
    # Without selection (the STCN form) the query norm is dropped: -|m|^2 + 2 m.q = -|m - q|^2 + |q|^2.
    plain = get_similarity(t(mk[None]), None, t(qk[None]), None)[0].numpy()
    expected = (ref_similarity(mk, np.ones(30), qk, np.ones((8, 12))) * np.sqrt(8) + (qk**2).sum(0)) / np.sqrt(8)
    np.testing.assert_allclose(plain, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("top_k", [None, 1, 5, 30])
def test_softmax_keeps_the_top_k_of_each_query(top_k):
    sim = -RNG.uniform(0, 6, size=(30, 9))
    got = do_softmax(t(sim[None]), top_k)[0].numpy()
    np.testing.assert_allclose(got, ref_softmax(sim, top_k), rtol=1e-5, atol=1e-7)
    assert ((got > 0).sum(0) == (top_k or 30)).all()


def test_top_k_larger_than_the_memory_is_a_clear_error():
    with pytest.raises(ValueError, match="top_k=30 is larger than the 16 memory elements"):
        do_softmax(torch.zeros(1, 16, 4), 30)


def test_readout_and_aggregate():
    affinity, values = RNG.uniform(size=(1, 20, 6)), RNG.normal(size=(3, 5, 20))
    np.testing.assert_allclose(readout(t(affinity), t(values)).numpy(), values @ affinity[0], rtol=1e-5, atol=1e-6)
    prob = RNG.uniform(size=(3, 4, 5)).astype(np.float32)
    # The clamp to [1e-7, 1 - 1e-7] matters at exact 0 and 1 (in float32, as the network computes it).
    prob[0, 0, 0], prob[1, 0, 1] = 0.0, 1.0
    with_bg = np.clip(np.concatenate([np.prod(1 - prob, 0, keepdims=True), prob]), 1e-7, 1 - 1e-7)
    logits = np.log(with_bg / (1 - with_bg))
    expected = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    got_logits, got = aggregate(t(prob), dim=0)
    np.testing.assert_allclose(got_logits.numpy(), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(64, 64), (90, 120), (17, 33), (1, 16)])
def test_padding_to_a_multiple_of_16_centres_the_input_with_the_odd_pixel_after(shape):
    x = RNG.normal(size=(2, *shape)).astype(np.float32)
    padded, pad = pad_divide_by(torch.from_numpy(x), 16)
    h, w = shape
    new_h, new_w = -(-h // 16) * 16, -(-w // 16) * 16
    top, left = (new_h - h) // 2, (new_w - w) // 2
    expected = np.zeros((2, new_h, new_w), np.float32)
    expected[:, top : top + h, left : left + w] = x
    assert pad == (left, new_w - w - left, top, new_h - h - top)
    np.testing.assert_array_equal(padded.numpy(), expected)
    np.testing.assert_array_equal(unpad(padded, pad).numpy(), x)


def test_normalization_equals_torchvision_to_tensor_and_normalize():
    from PIL import Image
    from torchvision import transforms

    frame = RNG.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    reference = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])]
    )
    np.testing.assert_array_equal(normalize(torch.from_numpy(frame)).numpy(), reference(Image.fromarray(frame)).numpy())


def test_store_bookkeeping():
    store = KeyValueStore(count_usage=True)
    store.add(t(np.ones((1, 4, 3))), t(np.ones((2, 5, 3))), t(np.ones((1, 1, 3))), None)
    store.add(t(np.zeros((1, 4, 2))), t(np.zeros((2, 5, 2))), t(np.zeros((1, 1, 2))), None)
    assert store.size == 5 and store.value.shape == (2, 5, 5) and store.selection is None
    store.update_usage(t([0.5, 0, 1, 2, 3]))
    store.update_usage(t([0.5, 0, 1, 2, 3]))
    np.testing.assert_allclose(store.usage().flatten().numpy(), np.array([1, 0, 2, 4, 6]) / (2 + 1e-7), rtol=1e-6)
    key, shrinkage, selection, usage = store.slice(1, -1)
    assert key.shape == (1, 4, 3) and selection is None and usage.shape == (1, 1, 3)
    assert store.slice(2, 0)[0].shape == (1, 4, 3)  # end 0 means to the end
    store.remove_range(1, -2)
    assert store.size == 3
    np.testing.assert_allclose(store.use_count.flatten().numpy(), [1, 4, 6])
    store.remove_obsolete(1)  # drops the 2 least used
    np.testing.assert_allclose(store.use_count.flatten().numpy(), [6])
    ties = KeyValueStore(count_usage=True)
    ties.add(t(np.ones((1, 1, 4))), t(np.ones((1, 1, 4))), t(np.ones((1, 1, 4))))
    ties.update_usage(t([1, 1, 1, 2]))
    ties.remove_obsolete(3)  # XMem drops every element tied with the cut-off
    np.testing.assert_allclose(ties.use_count.flatten().numpy(), [2])


def frame_memory(rng, ck=4, cv=3, objects=2, h=2, w=3):
    """Random (key, shrinkage, value, selection) of one memory frame."""
    return (
        t(rng.normal(size=(1, ck, h, w))),
        t(rng.uniform(1, 2, size=(1, 1, h, w))),
        t(rng.normal(size=(1, objects, cv, h, w))),
        t(rng.uniform(0, 1, size=(1, ck, h, w))),
    )


def test_consolidation_turns_the_most_used_mid_term_elements_into_prototypes():
    config = XMemConfig(
        top_k=4, max_mid_term_frames=4, min_mid_term_frames=2, num_prototypes=3, max_long_term_elements=100
    ).for_video(10)
    manager = MemoryManager(config, hidden_dim=0)
    rng = np.random.default_rng(1)
    frames = [frame_memory(rng) for _ in range(4)]
    for i, (key, shrinkage, value, selection) in enumerate(frames[:3]):
        manager.add(key, shrinkage, value, selection)
        manager.match(*frame_memory(rng)[::3])  # a read between memory frames counts usage
        assert manager.work.size == 6 * (i + 1) and manager.long.size == 0
    hw = 6
    work_usage = manager.work.usage().flatten().numpy()
    keys = np.concatenate([f[0].flatten(2)[0].numpy() for f in frames], -1)
    shrink = np.concatenate([f[1].flatten(2)[0, 0].numpy() for f in frames], -1)
    values = np.concatenate([f[2][0].flatten(2).numpy() for f in frames], -1)
    select = np.concatenate([f[3].flatten(2)[0].numpy() for f in frames], -1)
    manager.add(*frames[3])  # 4 frames = max_mid_term_frames: consolidate

    # The working memory keeps min_mid_term_frames frames: the first and the newest min - 1. Candidates: [6, 18).
    candidates = np.arange(hw, 3 * hw)
    usage = np.concatenate([work_usage, np.zeros(hw)])[candidates]  # the new frame was never read
    chosen = candidates[np.argsort(-usage, kind="stable")[:3]]
    affinity = ref_softmax(ref_similarity(keys[:, candidates], shrink[candidates], keys[:, chosen], select[:, chosen]))
    np.testing.assert_allclose(manager.long.key[0].numpy(), keys[:, chosen], rtol=1e-6)
    np.testing.assert_allclose(manager.long.value.numpy(), values[:, :, candidates] @ affinity, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(manager.long.shrinkage[0, 0].numpy(), shrink[candidates] @ affinity, rtol=1e-5)
    kept = np.r_[0:hw, 3 * hw : 4 * hw]
    np.testing.assert_array_equal(manager.work.key[0].numpy(), keys[:, kept])
    np.testing.assert_array_equal(manager.work.value.numpy(), values[:, :, kept])
    assert manager.long.selection is None and manager.long.count_usage is False


def test_reading_with_long_term_memory_covers_both_stores_and_counts_usage():
    config = XMemConfig(
        top_k=None, max_mid_term_frames=3, min_mid_term_frames=2, num_prototypes=2, max_long_term_elements=5
    ).for_video(100)
    assert config.enable_long_term_count_usage  # 100 / (3 - 2) * 2 >= 5
    manager = MemoryManager(config, hidden_dim=0)
    rng = np.random.default_rng(2)
    for _ in range(3):
        manager.add(*frame_memory(rng))
    assert manager.long.size == 2 and manager.work.size == 2 * 6
    query, _, _, selection = frame_memory(rng)
    got = manager.match(query, selection)
    keys = torch.cat([manager.long.key, manager.work.key], -1)[0].numpy()
    shrink = torch.cat([manager.long.shrinkage, manager.work.shrinkage], -1)[0, 0].numpy()
    values = torch.cat([manager.long.value, manager.work.value], -1).numpy()
    affinity = ref_softmax(ref_similarity(keys, shrink, query.flatten(2)[0].numpy(), selection.flatten(2)[0].numpy()))
    np.testing.assert_allclose(got.flatten(2).numpy(), values @ affinity, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(manager.long.use_count.flatten().numpy(), affinity.sum(1)[:2], rtol=1e-5)
    np.testing.assert_allclose(manager.work.use_count.flatten().numpy()[-6:], affinity.sum(1)[-6:], rtol=1e-5)
    # The long-term memory is now full (2 + 2 prototypes >= 5 - 2): the least used go before consolidating.
    for _ in range(2):
        manager.add(*frame_memory(rng))
        manager.match(query, selection)
    assert manager.long.size <= 5


def test_consolidation_that_xmem_cannot_do_is_a_clear_error():
    config = XMemConfig(top_k=2, max_mid_term_frames=3, min_mid_term_frames=2, num_prototypes=7).for_video(10)
    manager = MemoryManager(config, hidden_dim=0)
    rng = np.random.default_rng(3)
    manager.add(*frame_memory(rng))
    manager.add(*frame_memory(rng))
    with pytest.raises(ValueError, match="cannot consolidate 6 working-memory elements into num_prototypes=7"):
        manager.add(*frame_memory(rng))
    full = XMemConfig(
        max_mid_term_frames=3, min_mid_term_frames=2, num_prototypes=2, max_long_term_elements=4,
        enable_long_term_count_usage=False,
    )  # fmt: skip
    manager = MemoryManager(full, hidden_dim=0)
    with pytest.raises(ValueError, match="enable_long_term_count_usage is False"):
        for _ in range(6):
            manager.add(*frame_memory(rng))
