"""Tiny HF checkpoints shared by the Qwen2.5-VL tests."""

import pytest

from vrsjax.testing import relayout, write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """{'legacy': dir, 'v5': dir, 'untied': dir} of one random tiny model (the untied one is another model)."""
    root = tmp_path_factory.mktemp("tiny")
    legacy = write_tiny_checkpoint(root / "legacy", layout="legacy", seed=0)
    return {
        "legacy": legacy,
        "v5": relayout(legacy, root / "v5", "v5"),
        "untied": write_tiny_checkpoint(root / "untied", layout="v5", seed=1, tie_word_embeddings=False),
    }
