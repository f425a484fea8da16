"""The attention backends agree where they run: reference vs XLA vs Pallas splash (interpreted on CPU), and `auto`.

Cases: grouped-query and multi-head, no mask, causal + left padding (fully masked rows), random masks, vision-style
key masks, lengths that are not block multiples; outputs and gradients in float32. cuDNN needs an NVIDIA GPU and
TPU splash a TPU: here only the choice `auto` makes for those platforms is checked.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from parallel_mp_worker import model_batch

from vrsjax.layers.attention import (
    attention,
    cudnn_lowering_error,
    for_platform,
    resolve_implementation,
    splash_available,
)
from vrsjax.models import qwen2_5_vl
from vrsjax.parallel.mesh import make_mesh

SCALE = 0.3
_attention = jax.jit(attention, static_argnames=("scale", "implementation"))


def _inputs(b, t, s, n, k, d, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(b, t, n, d)), jnp.float32)
    kk, v = (jnp.asarray(rng.normal(size=(b, s, k, d)), jnp.float32) for _ in range(2))
    return q, kk, v


def _masks(b, t, s, seed=0):
    rng = np.random.default_rng(seed)
    valid = np.ones((b, s), bool)
    valid[0, : s - 3] = False  # long left padding: most rows of sequence 0 see no key at all
    causal_padding = np.tril(np.ones((t, s), bool), k=s - t)[None] & valid[:, None, :]
    random = rng.random((b, t, s)) < 0.3
    random[-1, 2] = False  # one fully masked row
    keys = np.broadcast_to((rng.random((b, 1, s)) < 0.7), (b, t, s))  # vision blocks: a key mask per block
    return {"none": None, "causal_padding": causal_padding, "random": random, "keys": keys}


CASES = [(2, 12, 12, 4, 2, 16), (2, 9, 21, 4, 4, 8), (2, 130, 130, 6, 2, 16)]  # GQA, MHA + cross, > 1 block


@pytest.mark.parametrize("impl", ["xla", "splash"])
@pytest.mark.parametrize("shape", CASES, ids=["gqa", "mha_cross", "two_blocks"])
def test_backends_match_reference(impl, shape):
    q, k, v = _inputs(*shape)
    for name, mask in _masks(shape[0], shape[1], shape[2]).items():
        mask = None if mask is None else jnp.asarray(mask)
        want = np.asarray(_attention(q, k, v, mask, scale=SCALE, implementation="reference"))
        got = np.asarray(_attention(q, k, v, mask, scale=SCALE, implementation=impl))
        assert np.isfinite(got).all(), name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{impl} {name}")


@pytest.mark.parametrize("impl", ["xla", "splash"])
def test_backend_gradients_match_reference(impl):
    shape = CASES[0]
    q, k, v = _inputs(*shape, seed=1)
    mask = jnp.asarray(_masks(shape[0], shape[1], shape[2], seed=1)["causal_padding"])

    def grads(implementation):
        loss = lambda q, k, v: jnp.sum(attention(q, k, v, mask, scale=SCALE, implementation=implementation) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

    for got, want, name in zip(grads(impl), grads("reference"), "qkv", strict=True):
        got, want = np.asarray(got), np.asarray(want)
        assert np.isfinite(got).all()
        # online (blockwise) softmax sums in another order: compare at float32 resolution of the gradient's scale
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=f"d{name}")


@pytest.mark.parametrize(
    "platform, version, dtype, head_dim, lengths, expected",
    [
        ("gpu", "PJRT C API\ncuda 12090", jnp.bfloat16, 128, (64, 64), "cudnn"),
        ("gpu", "cuda 12090", jnp.float16, 80, (400, 400), "cudnn"),  # the vision heads
        ("gpu", "cuda 12090", jnp.float32, 128, (64, 64), "xla"),  # cuDNN flash attention is half precision only
        ("gpu", "cuda 12090", jnp.bfloat16, 136, (64, 64), "xla"),  # head dim not a multiple of 8 / too large
        ("gpu", "cuda 12090", jnp.bfloat16, 128, (63, 63), "xla"),  # odd lengths
        ("gpu", "rocm 6.2", jnp.bfloat16, 128, (64, 64), "xla"),  # AMD: no cuDNN
        ("tpu", "", jnp.bfloat16, 80, (64, 64), "xla"),  # not a lane multiple
        ("cpu", "cpu", jnp.bfloat16, 128, (64, 64), "xla"),
    ],
)
def test_auto_choice_per_platform(platform, version, dtype, head_dim, lengths, expected):
    assert resolve_implementation(dtype, head_dim, *lengths, platform=platform, platform_version=version) == expected


def test_auto_on_tpu_is_splash_when_pallas_imports_and_it_can_shard():
    assert splash_available()  # this JAX ships the Pallas TPU kernels (they import on CPU)
    assert resolve_implementation(jnp.bfloat16, 128, 64, 64, platform="tpu") == "xla"  # 8 devices, no context mesh
    with jax.set_mesh(make_mesh(2, 2, 2)):
        assert resolve_implementation(jnp.bfloat16, 128, 64, 64, platform="tpu") == "splash"


def test_splash_per_shard_under_a_context_mesh():
    """Sequences over data x fsdp, kv heads (with their query groups) over tensor, one kernel per shard."""
    mesh = make_mesh(2, 2, 2)
    q, k, v = _inputs(4, 12, 12, 4, 2, 16, seed=2)
    mask = jnp.asarray(_masks(4, 12, 12, seed=2)["causal_padding"])
    want = np.asarray(_attention(q, k, v, mask, scale=SCALE, implementation="reference"))
    with jax.set_mesh(mesh):
        place = lambda a, s: jax.device_put(a, NamedSharding(mesh, s))  # noqa: E731
        qkv = [place(a, P(("data", "fsdp"), None, "tensor")) for a in (q, k, v)]
        got = _attention(*qkv, place(mask, P(("data", "fsdp"))), scale=SCALE, implementation="splash")
    assert got.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_auto_here_is_xla_and_unknown_names_raise():
    assert resolve_implementation(jnp.float32, 16, 8, 8) == "xla"
    q, k, v = _inputs(*CASES[0])
    auto = attention(q, k, v, None, scale=SCALE, implementation="auto")
    np.testing.assert_array_equal(
        np.asarray(auto), np.asarray(attention(q, k, v, None, scale=SCALE, implementation="xla"))
    )
    with pytest.raises(ValueError, match="expected one of"):
        attention(q, k, v, None, scale=SCALE, implementation="flash")
    with pytest.raises(ValueError, match="attention='flash'"):
        qwen2_5_vl.Qwen2_5_VLConfig(attention="flash")


@pytest.mark.parametrize("impl", ["auto", "splash"])
def test_whole_model_with_each_backend(tiny, impl):
    """The tiny model (vision window attention, GQA text attention with left padding) through each backend."""
    batch = model_batch()
    want = np.asarray(qwen2_5_vl.from_pretrained(tiny, attention="reference")(**batch))
    got = np.asarray(qwen2_5_vl.from_pretrained(tiny, attention=impl)(**batch))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # padding positions included


def test_auto_for_another_platform():
    """`auto:<platform>` (what `vrsjax lower` puts in the model) chooses for the target, never for this host."""
    assert for_platform("auto", "tpu") == "auto:tpu" and for_platform("xla", "tpu") == "xla"
    with pytest.raises(ValueError, match="platform 'gpu'"):
        for_platform("auto", "gpu")  # jax.export names NVIDIA GPUs "cuda"
    q, k, v = _inputs(*CASES[0])
    with pytest.raises(ValueError, match="auto:<one of"):
        attention(q, k, v, None, scale=SCALE, implementation="auto:gpu")
    np.testing.assert_array_equal(
        np.asarray(attention(q, k, v, None, scale=SCALE, implementation="auto:cpu")),
        np.asarray(attention(q, k, v, None, scale=SCALE, implementation="xla")),
    )
    reason = cudnn_lowering_error()  # None only where JAX sees cuDNN and a GPU to trace the kernel with
    want = "cudnn" if reason is None else "xla"
    assert resolve_implementation(jnp.bfloat16, 128, 64, 64, platform="cuda") == want
    assert reason is None or "cuDNN" in reason
