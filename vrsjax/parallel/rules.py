"""One table maps logical axis names (on parameters and activations) to mesh axes.

Parameters carry their names as `axes` metadata (see `vrsjax.layers.linear`). A mesh axis that does not divide
the dimension is dropped for that tensor (replicated) rather than failing, so tiny test models shard too.
"""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vrsjax.parallel.placement import put_global  # placement without device_put's cross-host all-gather

RULES: dict[str, tuple[str, ...]] = {
    # parameters
    "embed": ("fsdp",),
    "vocab": ("tensor",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "qkv": ("tensor",),
    "mlp": ("tensor",),
    "merged": ("fsdp",),
    "patch": (),
    "norm": (),
    # activations
    "batch": ("data", "fsdp"),
    "length": (),
    "act_embed": (),
    "act_heads": ("tensor",),
}


def spec(names: tuple, shape: tuple[int, ...], mesh: Mesh, rules: dict = RULES) -> PartitionSpec:
    """Logical names -> PartitionSpec, dropping mesh axes already used or not dividing the dimension."""
    if not names:
        return PartitionSpec()
    used, out = set(), []
    for name, dim in zip(names, shape, strict=True):
        axes = tuple(a for a in rules.get(name, ()) if a in mesh.shape and a not in used and mesh.shape[a] > 1)
        size = 1
        for a in axes:
            size *= mesh.shape[a]
        if not axes or dim % size:
            out.append(None)
            continue
        used.update(axes)
        out.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def param_shardings(state: nnx.State, mesh: Mesh, rules: dict = RULES):
    """A pytree of NamedSharding matching an nnx.State of Params (replicated where no names are given)."""

    def one(variable):
        names = variable.get_metadata().get("axes", ())
        return NamedSharding(mesh, spec(tuple(names), variable.shape, mesh, rules))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh, rules: dict = RULES) -> nnx.Module:
    """Place every parameter of `model` on `mesh` by its logical names (in place) and return the model."""
    state = nnx.state(model)
    shardings = param_shardings(state, mesh, rules)
    values = jax.tree.map(lambda v: v.get_value(), state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    shardings_leaves = jax.tree.map(lambda s: s, shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    placed = jax.tree.map(put_global, values, shardings_leaves)
    nnx.update(model, placed)
    return model


def constrain(x: jax.Array, names: tuple, mesh: Mesh | None, rules: dict = RULES) -> jax.Array:
    """with_sharding_constraint by logical names; identity without a mesh."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec(names, x.shape, mesh, rules)))
