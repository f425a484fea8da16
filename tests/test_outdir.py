"""vrsjax.outdir.claim: an output folder never loses what the command did not write."""

import json

import pytest

from vrsjax.errors import UserError
from vrsjax.outdir import MARKER, claim

WRITES = ("frames", "result.json", "part_*.txt")


def test_missing_and_empty_folders_are_created_and_marked(tmp_path):
    out = claim(tmp_path / "a" / "b", WRITES, tool="t")
    assert json.loads((out / MARKER).read_text()) == {"tool": "t", "writes": list(WRITES)}
    (tmp_path / "empty").mkdir()
    assert claim(tmp_path / "empty", WRITES) == tmp_path / "empty"


def test_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="--out .*f: is a file"):
        claim(tmp_path / "f", WRITES)


def test_a_foreign_folder_is_refused_and_overwrite_removes_only_what_the_command_writes(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "x.jpg").write_text("old")
    (tmp_path / "part_1.txt").write_text("old")
    with pytest.raises(UserError, match="not empty and was not written by vrsjax .*--overwrite"):
        claim(tmp_path, WRITES)
    assert (tmp_path / "frames" / "x.jpg").exists()  # the refusal touched nothing
    claim(tmp_path, WRITES, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER, "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_our_folder_is_reused_and_a_later_foreign_file_is_kept(tmp_path):
    out = claim(tmp_path / "o", WRITES)
    (out / "frames").mkdir()
    (out / "result.json").write_text("{}")
    claim(out, WRITES)  # a second run of the same command: what it wrote goes
    assert sorted(p.name for p in out.iterdir()) == [MARKER]
    (out / "result.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds files a vrsjax command did not write .*notes.txt"):
        claim(out, WRITES)
    claim(out, WRITES, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "notes.txt"]


def test_a_link_is_removed_as_a_link(tmp_path):
    target = tmp_path / "keep"
    target.mkdir()
    (target / "data.bin").write_text("precious")
    out = tmp_path / "o"
    out.mkdir()
    (out / "frames").symlink_to(target)
    claim(out, WRITES, overwrite=True)
    assert not (out / "frames").exists() and (target / "data.bin").read_text() == "precious"
