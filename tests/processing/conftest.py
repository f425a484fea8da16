"""A tiny Qwen2.5-VL tokenizer/processor dir, and transformers' processors built from it (the references)."""

import pytest

from vrsjax.processing import Processor
from vrsjax.testing import write_tiny_tokenizer


@pytest.fixture(scope="session")
def proc_dir(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tiny_processor"))


@pytest.fixture(scope="session")
def proc(proc_dir):
    return Processor.from_pretrained(proc_dir)


@pytest.fixture(scope="session")
def proc_torch(proc_dir):
    return Processor.from_pretrained(proc_dir, image_backend="torch")


@pytest.fixture(scope="session")
def hf_pil(proc_dir):
    """transformers' Qwen2_5_VLProcessor with the PIL image processor (the path `Processor` matches by default)."""
    from transformers import AutoTokenizer, AutoVideoProcessor
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(proc_dir),
        tokenizer=AutoTokenizer.from_pretrained(proc_dir),
        video_processor=AutoVideoProcessor.from_pretrained(proc_dir),
    )


@pytest.fixture(scope="session")
def hf_auto(proc_dir):
    """`AutoProcessor.from_pretrained(dir)`: the torchvision image processor when torchvision is installed."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(proc_dir)
