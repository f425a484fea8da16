"""docs/configs.md from the config dataclasses: every key, its type, default and meaning, one table per section.

The meaning of a key is the comment on its field in the source (trailing `# ...`, or a comment block directly
above it); a section's text is its class docstring. The source is the single place to describe a key, and a key
without a comment is an error here, so a new key cannot reach the docs undescribed. `ROOTS` lists the root
dataclasses to document (one line per schema). Run `python -m vrsjax.configs_doc` to rewrite docs/configs.md;
`python -m vrsjax.configs_doc --check` exits 1 when the file is stale (the test suite checks the same).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import io
import json
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import Any, get_origin, get_type_hints

# (title, "module:Class", how the schema is used): each root dataclass becomes one part of docs/configs.md.
ROOTS: list[tuple[str, str, str]] = [
    (
        "GRPO recipes",
        "vrsjax.config:Config",
        "`vrsjax train-grpo config=RECIPE.yaml [dotted.key=value ...]` and `vrsjax plan`; the EasyR1 schema.",
    ),
    (
        "CoT SFT recipes",
        "vrsjax.sft.config:SFTConfig",
        "`vrsjax train-sft config=RECIPE.yaml [key=value ...]`; LLaMA-Factory's flat keys.",
    ),
]
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "configs.md"
COMMAND = "python -m vrsjax.configs_doc"
# What a schema module's ENGINE_KEYS are (vrsjax.config and vrsjax.sft.config both have them).
_ENGINE_TEXT = (
    "Keys of the upstream schema that only configure engines vrsjax replaces. A recipe may set them; they are "
    "listed in one `IgnoredKeysWarning` and have no effect. A key naming a section covers every key below it."
)


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its description: the comment block directly above the field (no blank line between; `# ---`
    group headers skipped), then the trailing `# ...` on the field's lines."""
    lines, _ = inspect.getsourcelines(cls)
    source = textwrap.dedent("".join(lines))
    comments: dict[int, str] = {}  # line number (1-based, in `source`) -> comment text
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    src_lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, row = [], node.lineno - 1
        while row >= 1 and src_lines[row - 1].strip().startswith("#"):
            if not comments[row].startswith("---"):  # "# --- model": a group header, not this field's text
                above.insert(0, comments[row])
            row -= 1
        trailing = [comments[r] for r in range(node.lineno, node.end_lineno + 1) if r in comments]
        if text := _join([" ".join(above), " ".join(trailing)]):
            out[node.target.id] = text
    return out


def _join(parts: list[str]) -> str:
    """The block above and the trailing comment -> one description ('; ' between them, or a new sentence)."""
    text = ""
    for part in filter(None, parts):
        if not text:
            text = part
        elif text.endswith("."):
            text += " " + part[0].upper() + part[1:]
        else:
            text += "; " + part
    return text


def section_doc(cls: type) -> str:
    """The class's own docstring as one paragraph ('' when it has none; dataclass's generated signature is not)."""
    doc = cls.__dict__.get("__doc__") or ""
    if doc.startswith(cls.__name__ + "("):
        return ""
    return " ".join(inspect.cleandoc(doc).split())


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _type_text(cls: type, name: str, tp: Any) -> str:
    """The annotation as written (a string under `from __future__ import annotations`), else as Python prints it."""
    annotation = cls.__annotations__.get(name, tp)
    if isinstance(annotation, str):
        return annotation
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "")


def _yaml_value(value: Any) -> str:
    """A default as it is written in a recipe (null, true, [0.9, 0.999], "text")."""
    if value is dataclasses.MISSING:
        return "required"
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _text(text: str) -> str:
    """A meaning cell: also escape `<`, which Markdown would take for the start of an HTML tag (<output_dir>)."""
    return _cell(text).replace("<", "\\<")


def walk(cls: type, prefix: str = "", missing: list[str] | None = None) -> list[tuple[str, type, list[tuple]]]:
    """[(section key, class, [(dotted key, type, default, meaning)])] for `cls` and every nested section,
    depth first in field order. Raises ValueError listing every field that has no comment."""
    hints = get_type_hints(cls)
    comments = field_comments(cls)
    rows, nested, top = [], [], missing is None
    missing = [] if top else missing
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_section(tp):
            nested.extend(walk(tp, f"{prefix}{f.name}.", missing))
            continue
        if f.name not in comments:
            missing.append(f"{cls.__module__}.{cls.__qualname__}.{f.name} ({prefix}{f.name})")
            continue
        rows.append((prefix + f.name, _type_text(cls, f.name, tp), _yaml_value(_default(f)), comments[f.name]))
    if top and missing:
        raise ValueError(
            "config fields without a description (add a `# meaning` comment on the field's line): " + ", ".join(missing)
        )
    return [(prefix.rstrip("."), cls, rows), *nested]


def render_root(title: str, spec: str, usage: str) -> str:
    module_name, _, class_name = spec.partition(":")
    module = importlib.import_module(module_name)
    root = getattr(module, class_name)
    parts = [f"## {title}", "", f"Used by {usage} Schema: `{spec}`.", ""]
    for key, cls, rows in walk(root):
        if not rows:
            continue
        parts += [f"### `{key}`" if key else "### Top-level keys", ""]
        if doc := section_doc(cls):
            parts += [doc, ""]
        parts += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        parts += [f"| `{k}` | `{_cell(t)}` | `{_cell(d)}` | {_text(m)} |" for k, t, d, m in rows]
        parts.append("")
    parts += _engine_keys(module)
    return "\n".join(parts)


def _engine_keys(module: Any) -> list[str]:
    """The keys a schema accepts without a field of its own: ignored engine keys, aliases and moved keys."""
    out = []
    if engine := getattr(module, "ENGINE_KEYS", None):
        out += ["### Accepted and ignored", "", _ENGINE_TEXT, ""]
        out += [", ".join(f"`{key}`" for key in sorted(engine)), ""]
    if aliases := getattr(module, "ALIASES", None):
        out += ["### Aliases (EasyR1 HEAD names)", "", "| key | read as | values |", "| --- | --- | --- |"]
        for key, (target, values) in aliases.items():
            section = key.rpartition(".")[0]
            shown = ", ".join(f"`{a}` -> `{b}`" for a, b in values.items()) or "unchanged"
            out.append(f"| `{key}` | `{section}.{target}` | {_cell(shown)} |")
        out.append("")
    if moved := getattr(module, "MOVED", None):
        out += ["### Moved (an error that points to the key to use)", "", "| key | use instead |", "| --- | --- |"]
        out += [f"| `{key}` | {_cell(target)} |" for key, target in moved.items()]
        out.append("")
    return out


def render(roots: list[tuple[str, str, str]] | None = None) -> str:
    """The whole of docs/configs.md for `roots` (default `ROOTS`)."""
    header = [
        "# Configuration keys",
        "",
        f"<!-- Generated from the config dataclasses by `{COMMAND}`; do not edit by hand. -->",
        "",
        "Every key a recipe (YAML) or a dotted override (`key=value` on the command line) can set, with its type, "
        "default and meaning. Values merge as defaults <- YAML <- overrides; `null` means unset, and keys whose "
        "meaning starts with *auto* are filled in from other keys when left at their default.",
        "",
    ]
    return "\n".join(header + [render_root(*root) for root in (roots or ROOTS)]).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DOC_PATH, help=f"where to write (default {DOC_PATH})")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date; run `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
