"""One process of a 2-process GRPO step, started by test_rl_multiprocess.py (not a test module).

usage: rl_mp_worker.py CKPT_DIR RUN_DIR   (process settings from the JAX_* environment variables)

Each process has 2 simulated CPU devices; the mesh spans both processes (fsdp over all 4 devices). Every process
builds the trainer on its own shard of the prompts; one greedy GRPO step runs, process 0 writes the metrics and
RUN_DIR/result.npz (loss, flat parameters) and the checkpoint metadata; every process writes process_<i>.json.
"""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "float32")

from vrsjax.parallel import distributed  # noqa: E402

distributed.initialize()

from jax.experimental import multihost_utils  # noqa: E402
from test_rl_trainer import make_trainer  # noqa: E402

from vrsjax.parallel.mesh import make_mesh  # noqa: E402
from vrsjax.processing import Processor  # noqa: E402


def main(ckpt: str, run: str) -> None:
    mesh = make_mesh(data=1, fsdp=-1, tensor=1)
    trainer = make_trainer((ckpt, Processor.from_pretrained(ckpt)), run, mesh=mesh, **{"worker.rollout.temperature": 0})
    history = trainer.train(1)
    trainer.save()
    params = multihost_utils.process_allgather(trainer.params, tiled=True)
    flat = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(params)])
    info = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "loss": history[0]["actor/loss"],
        "loaded": trainer.loaded,
    }
    with open(os.path.join(run, f"process_{jax.process_index()}.json"), "w") as f:
        json.dump(info, f)
    if jax.process_index() == 0:
        np.savez(os.path.join(run, "result.npz"), loss=history[0]["actor/loss"], params=flat)
    trainer.close()
    multihost_utils.sync_global_devices("done")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
