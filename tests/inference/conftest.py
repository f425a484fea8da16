"""Fixtures of the inference tests: one tiny Qwen2.5-VL checkpoint with its loaded policy, one small random-weight
SAM2 and a synthetic video as a frame folder and as an MP4 file, all built once per session."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))
from sam2_cases import SAM2_TEST_OPTIONS, synthetic_frames  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny SAM2/XMem calls are dominated by thread hand-offs on a busy machine: one thread is much faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from vrsjax.testing import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("inference") / "tiny", seed=1)


@pytest.fixture(scope="session")
def policy(tiny_checkpoint):
    from vrsjax.inference import Policy

    return Policy.load(tiny_checkpoint)


@pytest.fixture(scope="session")
def sam2_service():
    from vrsjax.services.sam2 import SAM2Service

    return SAM2Service(**SAM2_TEST_OPTIONS)


@pytest.fixture(scope="session")
def frame_folder(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """(folder of 6 PNG frames 48x64, the frames): PNG is lossless, so the folder decodes to the same arrays."""
    folder = tmp_path_factory.mktemp("frames")
    frames = synthetic_frames(6)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"img_{t:03d}.png")
    return folder, frames


@pytest.fixture(scope="session")
def mp4_video(tmp_path_factory) -> Path:
    """An MP4 of 6 frames 96x128 (large enough for XMem's top-30 memory read at 1/16 resolution)."""
    from vrsjax.inference.video import write_video

    frames = synthetic_frames(6, 96, 128)
    return write_video(tmp_path_factory.mktemp("mp4") / "clip.mp4", frames, fps=4)
