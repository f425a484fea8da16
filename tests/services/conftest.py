"""Fixtures of the SAM2 service tests: one small random-weight SAM2, a JPEG folder of the test frames, one torch
thread."""

import numpy as np
import pytest
from PIL import Image
from sam2_cases import FRAMES, SAM2_TEST_OPTIONS, synthetic_frames


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny SAM2 calls are dominated by thread hand-offs on a busy machine: one thread is ~10x faster. Modules opt
    in with `pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sam2_service():
    from vrsjax.services.sam2 import SAM2Service

    return SAM2Service(**SAM2_TEST_OPTIONS)


@pytest.fixture(scope="session")
def jpeg_video(tmp_path_factory) -> tuple[str, np.ndarray]:
    """(folder of 00000.jpg ..., the same frames decoded back): identical inputs for both SAM2 paths."""
    folder = tmp_path_factory.mktemp("jpeg_video")
    for t, frame in enumerate(synthetic_frames()):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    decoded = np.stack([np.array(Image.open(folder / f"{t:05d}.jpg")) for t in range(FRAMES)])
    return str(folder), decoded
