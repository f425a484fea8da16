"""One process of a multi-process CPU run, started by test_parallel_multiprocess.py (not a test module).

usage: parallel_mp_worker.py CKPT_DIR OUT_DIR [--checkpoint]   (process settings from DistributedConfig via
VRSJAX_TEST_DIST=coordinator,num,id, or from the JAX_* environment variables)

Each process has 2 simulated CPU devices. It joins the run, builds a mesh over every process's devices, loads the
tiny Qwen2.5-VL sharded across the processes and runs a forward pass, takes a sharded AdamW step on a toy loss with
each process feeding only its own rows, and optionally saves + restores the sharded weights with orbax. Process 0
writes the gathered results to OUT_DIR/results.npz; every process writes OUT_DIR/process_<i>.json.
"""

import json
import os
import sys

import numpy as np

# Batch, toy problem and step shared with the single-process reference in the test module.
TOY_BATCH, TOY_IN, TOY_HIDDEN = 16, 8, 4


def model_batch():
    """A text + image batch for the tiny model (left-padded row 1)."""
    from vrsjax.testing import TINY_IDS

    rng = np.random.default_rng(0)
    vision = [TINY_IDS["vision_start_token_id"]] + [TINY_IDS["image_token_id"]] * 4 + [TINY_IDS["vision_end_token_id"]]
    rows = [list(rng.integers(0, 290, 5)) + vision + list(rng.integers(0, 290, 5)), list(rng.integers(0, 290, 9))]
    ids = np.zeros((2, 16), np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, 16 - len(row) :], mask[i, 16 - len(row) :] = row, 1
    pixels = rng.normal(size=(16, 3 * 2 * 14 * 14)).astype(np.float32)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "image_grid_thw": np.array([[1, 4, 4]])}


def toy_problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(TOY_BATCH, TOY_IN)).astype(np.float32)
    y = rng.normal(size=(TOY_BATCH,)).astype(np.float32)
    params = {
        "w1": rng.normal(size=(TOY_HIDDEN, TOY_IN)).astype(np.float32),
        "w2": rng.normal(size=(TOY_HIDDEN,)).astype(np.float32),
    }
    return params, x, y


def toy_step(params, x, y):
    """-> (new params, loss, grads) after one AdamW step on mean((tanh(x W1^T) w2 - y)^2)."""
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(p):
        return jnp.mean((jnp.tanh(x @ p["w1"].T) @ p["w2"] - y) ** 2)

    optimizer = optax.adamw(1e-2, weight_decay=1e-2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return optax.apply_updates(params, updates), loss, grads


def main(ckpt_dir: str, out_dir: str, checkpoint: bool) -> None:
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax

    jax.config.update("jax_default_matmul_precision", "float32")
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec

    from vrsjax.parallel import distributed

    spec = os.environ.get("VRSJAX_TEST_DIST")
    config = None
    if spec:
        address, num, pid = spec.split(",")
        config = distributed.DistributedConfig(address, int(num), int(pid), initialization_timeout=60)
    launch = distributed.initialize(config)

    from vrsjax.models import qwen2_5_vl
    from vrsjax.parallel.data import host_local_to_global, process_rows
    from vrsjax.parallel.mesh import make_mesh
    from vrsjax.parallel.rules import param_shardings

    n = jax.process_count()
    mesh = make_mesh(data=n // 2 if n > 2 else 1, fsdp=-1, tensor=2)  # 2 processes: 1x2x2; 4: 2x2x2
    gather = lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True))  # noqa: E731

    # (b) the tiny model sharded across processes: parameters, then a forward pass
    model = qwen2_5_vl.from_pretrained(ckpt_dir, mesh=mesh)
    logits = gather(model(**model_batch()))
    from flax import nnx

    state = nnx.state(model, nnx.Param)
    local_param_bytes = sum(
        s.data.nbytes for _, v in nnx.to_flat_state(state) for s in v.get_value().addressable_shards
    )

    # (c) a sharded jitted AdamW step, each process feeding its own rows of the batch
    params, x, y = toy_problem()
    rows = process_rows(TOY_BATCH, mesh)
    xg, yg = host_local_to_global((x[rows], y[rows]), mesh, TOY_BATCH)
    pshard = {
        "w1": NamedSharding(mesh, PartitionSpec("tensor", "fsdp")),
        "w2": NamedSharding(mesh, PartitionSpec("tensor")),
    }
    from vrsjax.parallel.data import put_global

    params = {k: put_global(v, pshard[k]) for k, v in params.items()}
    new_params, loss, grads = jax.jit(toy_step)(params, xg, yg)
    toy = {f"param_{k}": gather(v) for k, v in new_params.items()} | {f"grad_{k}": gather(v) for k, v in grads.items()}

    restored_equal = None
    if checkpoint:  # every process saves and restores; orbax coordinates, each host reads only its shards
        from vrsjax.checkpoint import restore_params, save_params

        flat = {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(state)}
        target_sh = {".".join(map(str, p)): s for p, s in nnx.to_flat_state(param_shardings(state, mesh))}
        save_params(flat, os.path.join(out_dir, "ckpt"))
        target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=target_sh[k]) for k, v in flat.items()}
        restored = restore_params(os.path.join(out_dir, "ckpt"), target)
        restored_equal = all(
            np.array_equal(np.asarray(a.data), np.asarray(b.data))
            for k in flat
            for a, b in zip(flat[k].addressable_shards, restored[k].addressable_shards, strict=True)
        ) and all(restored[k].sharding == target_sh[k] for k in flat)

    distributed.main_print("MAIN-PROCESS-LINE", flush=True)
    info = {
        "source": launch.source,
        "process_index": jax.process_index(),
        "process_count": n,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "mesh": dict(mesh.shape),
        "rows": rows.tolist(),
        "is_main": distributed.is_main_process(),
        "local_param_bytes": local_param_bytes,
        "restored_equal": restored_equal,
        "loss": float(loss),
    }
    with open(os.path.join(out_dir, f"process_{jax.process_index()}.json"), "w") as f:
        json.dump(info, f)
    if distributed.is_main_process():
        np.savez(os.path.join(out_dir, "results.npz"), logits=logits, **toy)
    multihost_utils.sync_global_devices("done")  # nobody exits while others still need the coordinator


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--checkpoint" in sys.argv[3:])
