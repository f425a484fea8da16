"""`vrsjax train-grpo ARGS` with one checkpoint write failing inside orbax, for test_rl_checkpoint_faults.py (not a
test module). Exits as the CLI does.

usage: rl_fault_driver.py mkdir|write|none STEP ARGS...

mkdir: creating checkpoint STEP's folder fails with PermissionError (what a folder made immutable with `chattr +i`
gives); write: writing its arrays fails with ENOSPC (a full disk), in orbax's background thread.
"""

import errno
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"

from orbax.checkpoint._src.path import async_path  # noqa: E402
from orbax.checkpoint._src.serialization import serialization  # noqa: E402

from vrsjax.cli import main  # noqa: E402


def inject(fault: str, step: int) -> None:
    tmp = f"{step}.orbax-checkpoint-tmp"
    if fault == "mkdir":
        real_mkdir = async_path.mkdir

        async def mkdir(path, *args, **kwargs):
            if path.name.startswith(tmp):
                raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))
            return await real_mkdir(path, *args, **kwargs)

        async_path.mkdir = mkdir
    elif fault == "write":
        real_write = serialization.async_serialize_from_host

        async def write(slices, spec, *args, **kwargs):
            if tmp in str(spec):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return await real_write(slices, spec, *args, **kwargs)

        serialization.async_serialize_from_host = write


if __name__ == "__main__":
    inject(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(sys.argv[3:]))
