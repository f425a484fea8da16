"""One GRPO run in its own process, for test_rl_kill_resume.py (not a test module).

usage: rl_kill_driver.py CKPT_DIR RUN_DIR STEPS [--resume]

Trains the tiny model on synthetic samples with a checkpoint after every step; after each step prints
`SAVED <step>` once that step's checkpoint is complete on disk, and writes RUN_DIR/step_<k>.npz with the step's
loss and the flat parameters. --resume continues from the newest checkpoint in RUN_DIR.
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "float32")

from test_rl_trainer import make_trainer  # noqa: E402

from vrsjax.processing import Processor  # noqa: E402


def main(ckpt: str, run: str, steps: int, resume: bool) -> None:
    trainer = make_trainer((ckpt, Processor.from_pretrained(ckpt)), run, **{"trainer.max_steps": steps})
    if resume:
        assert trainer.restore(), f"no checkpoint in {run}"
        print(f"RESUMED {trainer.step_count}", flush=True)
    while trainer.step_count < steps:
        m = trainer.step()
        flat = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(trainer.params)])
        np.savez(os.path.join(run, f"step_{trainer.step_count}.npz"), loss=m["actor/loss"], params=flat)
        trainer.save(block=False)  # asynchronous: the next step starts while orbax writes
        trainer.wait()
        print(f"SAVED {trainer.step_count}", flush=True)
    trainer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), "--resume" in sys.argv[4:])
