"""The optimizer step keeps the parameters' shardings exactly, so it (and every pass taking the parameters) compiles
once per run, and it skips non-finite gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vrsjax.parallel.mesh import make_mesh
from vrsjax.rl import update


def test_apply_grads_keeps_shardings_and_compiles_once():
    mesh = make_mesh(data=2, fsdp=4)
    params = {
        "w": jax.device_put(jnp.ones((8, 16)), NamedSharding(mesh, P("fsdp", None))),
        "b": jax.device_put(jnp.ones((16,)), NamedSharding(mesh, P(None))),
    }
    specs = jax.tree.map(lambda a: a.sharding.spec, params)
    optimizer = optax.adamw(1e-2)
    state = optimizer.init(params)  # AdamW's step count lands on one device
    update._jitted_apply.cache_clear()
    for _ in range(3):
        grads = jax.tree.map(jnp.ones_like, params)
        params, state, norm, finite = update.apply_grads(params, state, grads, optimizer=optimizer)
        assert bool(finite)
        assert jax.tree.map(lambda a: a.sharding.spec, params) == specs
    assert update._jitted_apply.cache_info().currsize == 1
    step = update._jitted_apply(optimizer, *_key(params, state))  # the function the three calls used
    assert update._jitted_apply.cache_info().currsize == 1 and step._cache_size() == 1  # traced and compiled once


def _key(params, state):
    leaves, treedef = jax.tree.flatten((params, state))
    return treedef, tuple(leaf.sharding for leaf in leaves)


def test_apply_grads_skips_non_finite_gradients():
    params = {"w": jnp.ones((3,))}
    optimizer = optax.sgd(1.0)
    state = optimizer.init(params)
    grads = {"w": jnp.array([1.0, np.nan, 0.0])}
    new, _, _, finite = update.apply_grads(params, state, grads, optimizer=optimizer)
    assert not bool(finite)
    np.testing.assert_array_equal(np.asarray(new["w"]), np.ones(3))
