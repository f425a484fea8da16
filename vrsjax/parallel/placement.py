"""Placing a host value that every process holds in full (a weight read from a checkpoint) on a mesh, each process
copying only its addressable shards: `device_put` would first check that all processes hold equal values, an
all-gather of the whole tensor onto every host. Imported by `rules.shard_model` and re-exported by `data`; it
imports neither, so the package's imports run one way (data -> rules -> placement)."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding


def put_global(value, sharding: NamedSharding | None) -> jax.Array:
    """A host value held in full by every process -> a jax.Array with `sharding`, each process copying only its
    addressable shards. None places it on the default device."""
    if sharding is None:
        return jax.device_put(value)
    if sharding.is_fully_addressable or (isinstance(value, jax.Array) and not value.is_fully_addressable):
        return jax.device_put(value, sharding)  # local placement, or a reshard of an already global array
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
