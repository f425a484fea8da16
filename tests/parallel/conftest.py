"""One tiny HF checkpoint shared by the parallel tests (multi-process, attention backends, planner)."""

import pytest

from vrsjax.testing import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("parallel") / "tiny", layout="v5", tokenizer=False)
