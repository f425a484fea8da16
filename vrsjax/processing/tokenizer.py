"""The Qwen2 byte-level BPE tokenizer, built the way transformers 5.23 builds `Qwen2Tokenizer`.

transformers does not run a checkpoint's `tokenizer.json` pipeline as written: it takes the vocabulary, merges and
added tokens from it and rebuilds NFC normalisation, the Qwen2 split regex, byte-level pre-tokenisation (no prefix
space), a plain BPE model and the byte-level decoder (`models/qwen2/tokenization_qwen2.py`). We do the same with the
`tokenizers` package, so ids agree even for a checkpoint whose `tokenizer.json` declares another pipeline. Added
tokens keep their ids and their `special` flag (`<tool_call>`, the FIM tokens etc. are added but not special: they
survive `skip_special_tokens`). `vocab.json` + `merges.txt` are read when there is no `tokenizer.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5 added tokens in id order (151643..151664 in the real vocabulary); True = special.
QWEN2_5_ADDED_TOKENS = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)


def qwen2_pipeline(tokenizer: Tokenizer, add_prefix_space: bool = False) -> Tokenizer:
    """Install Qwen2's normaliser, pre-tokeniser and decoder on a BPE `Tokenizer` (in place) and return it."""
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


class QwenTokenizer:
    """Encode/decode with a checkpoint's Qwen2 vocabulary. `pad_token_id` etc. follow `tokenizer_config.json`."""

    def __init__(self, backend: Tokenizer, config: dict | None = None):
        self.backend = backend
        self.config = config or {}
        self.special_tokens = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}

    @classmethod
    def from_pretrained(cls, path: str | Path) -> QwenTokenizer:
        """Read `tokenizer.json` (or `vocab.json` + `merges.txt`) and `tokenizer_config.json` from a checkpoint dir."""
        path = Path(path)
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        if (path / "tokenizer.json").exists():
            spec = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
            if spec.get("model", {}).get("type") != "BPE":
                raise ValueError(
                    f"{path / 'tokenizer.json'}: expected a BPE model, got {spec.get('model', {}).get('type')}"
                )
            added = [(t["id"], t["content"], t.get("special", True)) for t in spec.get("added_tokens", [])]
            vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
        elif (path / "vocab.json").exists() and (path / "merges.txt").exists():
            vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
            lines = (path / "merges.txt").read_text(encoding="utf-8").splitlines()
            merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
            added = [
                (int(i), t["content"], t.get("special", True))
                for i, t in config.get("added_tokens_decoder", {}).items()
            ]
        else:
            raise FileNotFoundError(
                f"{path}: no tokenizer.json (or vocab.json + merges.txt); copy the tokenizer files of the checkpoint"
            )
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
        backend = Tokenizer(
            BPE(
                vocab=vocab,
                merges=merges,
                dropout=None,
                unk_token=None,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
                byte_fallback=False,
            )
        )
        qwen2_pipeline(backend, bool(config.get("add_prefix_space") or False))
        for token_id, content, special in sorted(added):
            token = AddedToken(
                content, special=special, normalized=False, lstrip=False, rstrip=False, single_word=False
            )
            (backend.add_special_tokens if special else backend.add_tokens)([token])
            if backend.token_to_id(content) != token_id:
                raise ValueError(
                    f"{path}: added token {content!r} should have id {token_id} but got {backend.token_to_id(content)};"
                    f" added token ids must follow the vocabulary without gaps"
                )
        return cls(backend, config)

    def _token(self, key: str, default: str | None) -> str | None:
        value = self.config.get(key, default)
        return value.get("content") if isinstance(value, dict) else value

    @property
    def pad_token_id(self) -> int:
        return self.backend.token_to_id(self._token("pad_token", "<|endoftext|>"))

    @property
    def eos_token_id(self) -> int:
        return self.backend.token_to_id(self._token("eos_token", "<|im_end|>"))

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """str -> ids; added tokens in the text are matched as units, no BOS/EOS is added (Qwen has none)."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """ids -> str; `skip_special_tokens` drops the special added tokens (not `<tool_call>` and the like)."""
        return self.backend.decode(
            [int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=skip_special_tokens
        )

    def batch_decode(self, rows, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(row, skip_special_tokens) for row in rows]
