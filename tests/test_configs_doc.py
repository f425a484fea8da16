"""docs/configs.md is generated from the config dataclasses: it must be current, cover every key, and a key
without a description must fail the generator."""

from dataclasses import dataclass, field

import pytest

from vrsjax import config, configs_doc
from vrsjax.sft import config as sft_config


def test_committed_configs_doc_is_current():
    current = configs_doc.DOC_PATH.read_text() if configs_doc.DOC_PATH.is_file() else ""
    assert current == configs_doc.render(), (
        "docs/configs.md is out of date with the config dataclasses; "
        f"run `{configs_doc.COMMAND}` and commit docs/configs.md"
    )


def test_every_schema_key_is_documented_with_its_default():
    text = configs_doc.render()
    for key in config._all_keys():  # fields, sections, ignored engine keys and aliases
        if key != "worker":  # a section holding only sections has no table of its own
            assert f"`{key}`" in text, key
    for key in sft_config._KEYS:
        assert f"| `{key}` |" in text or f"### `{key}`" in text, key  # a field or a section (mesh)
    assert "| `worker.rollout.n` | `int` | `8` |" in text
    assert "| `worker.actor.optim.betas` | `tuple[float, float]` | `[0.9, 0.999]` |" in text


@dataclass(frozen=True)
class _Inner:
    """Inner section."""

    # a block comment above
    size: int = 3  # and a trailing one
    names: tuple[str, ...] = ("a", "b")  # names | with a pipe


@dataclass(frozen=True)
class _Root:
    path: str | None = None  # where it lives
    inner: _Inner = field(default_factory=_Inner)


@dataclass(frozen=True)
class _Undescribed:
    fine: int = 1  # described
    bare: float = 0.5


def test_generator_reads_comments_nesting_and_escapes_pipes():
    text = configs_doc.render([("Toy", f"{__name__}:_Root", "tests.")])
    assert "| `path` | `str \\| None` | `null` | where it lives |" in text
    assert "### `inner`\n\nInner section." in text
    assert "| `inner.size` | `int` | `3` | a block comment above; and a trailing one |" in text
    assert '| `inner.names` | `tuple[str, ...]` | `["a", "b"]` | names \\| with a pipe |' in text


def test_a_key_without_description_is_an_error():
    with pytest.raises(ValueError, match=r"_Undescribed\.bare \(bare\)"):
        configs_doc.render([("Toy", f"{__name__}:_Undescribed", "tests.")])


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "configs.md"
    stale.write_text("old\n")
    assert configs_doc.main(["--out", str(stale), "--check"]) == 1
    assert configs_doc.COMMAND in capsys.readouterr().err
    assert configs_doc.main(["--out", str(stale)]) == 0
    assert configs_doc.main(["--out", str(stale), "--check"]) == 0
