"""The policy as the inference pipelines use it: a Qwen2.5-VL checkpoint directory loaded once (model + processor),
and one call that turns prompts with their images into answer texts.

`Policy.load(dir)` checks that `dir/config.json` describes a Qwen2.5-VL model before anything heavy happens, so a
checkpoint of another model fails with the file and the model type it found. `Policy.answer(texts, images, n=...)`
batches several prompts into one `vrsjax.rollout.generate` call (left-padded, sharded over the mesh's data axes
when a mesh is given) and returns `n` decoded answers per prompt; temperature 0 is greedy decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

QWEN2_5_VL_TYPES = ("qwen2_5_vl",)


def check_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory, after checking it holds a Qwen2.5-VL config.json (clear errors naming the file)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is not a directory; give a Qwen2.5-VL checkpoint directory")
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} does not exist; is {path} a Hugging Face checkpoint directory?")
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config} is not valid JSON ({err}); the checkpoint is corrupt") from err
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type not in QWEN2_5_VL_TYPES:
        architectures = data.get("architectures") if isinstance(data, dict) else None
        raise ValueError(
            f"{config}: model_type={model_type!r} (architectures {architectures}) is not a Qwen2.5-VL checkpoint; "
            f"vrsjax inference runs Qwen2.5-VL policies (model_type 'qwen2_5_vl')"
        )
    return path


@dataclass
class Policy:
    """model: a vrsjax Qwen2.5-VL; processor: its `vrsjax.processing.Processor`; mesh: None or a jax Mesh."""

    model: Any
    processor: Any
    mesh: Any = None
    checkpoint: str = ""

    @classmethod
    def load(cls, checkpoint: str | Path, dtype: str = "float32", attention: str = "reference", mesh=None) -> Policy:
        """Load model and processor from one checkpoint directory (HF layout or a converted vrsjax one)."""
        from vrsjax.models import qwen2_5_vl
        from vrsjax.processing import Processor

        path = check_checkpoint(checkpoint)
        model = qwen2_5_vl.from_pretrained(path, dtype=dtype, attention=attention, mesh=mesh)
        return cls(model, Processor.from_pretrained(path), mesh, str(path))

    @property
    def chat_template(self) -> str | None:
        return self.processor.chat_template

    def answer(
        self,
        texts: list[str],
        images: list[list[np.ndarray]],
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 1024,
        seed: int = 0,
        top_p: float = 1.0,
    ) -> list[list[str]]:
        """texts[b] holds one image pad per image of images[b] (uint8[H, W, 3] each) -> n answers per prompt."""
        from vrsjax import rollout

        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} prompts but {len(images)} image lists; give one list per prompt")
        flat = [np.asarray(image) for row in images for image in row]
        batch = self.processor(text=list(texts), images=flat or None, padding="longest")
        out = rollout.generate(
            self.model,
            batch,
            n=n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            processor=self.processor,
            mesh=self.mesh,
        )
        return [out.texts[b * n : (b + 1) * n] for b in range(len(texts))]
