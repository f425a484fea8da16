"""A small synthetic ReVOS-layout dataset for the teacher tests, and a helper that runs `vrsjax data ...` in-process."""

import pytest

from vrsjax.cli import build_parser
from vrsjax.data import synthetic


@pytest.fixture(scope="session")
def teacher_dataset(tmp_path_factory):
    return synthetic.write_dataset(tmp_path_factory.mktemp("teacher") / "revos", num_videos=4, seed=3)


@pytest.fixture
def run_data():
    """run_data("cot", "--dataset", ...) -> the report dict of that run."""

    def run(command: str, *argv: str) -> dict:
        from vrsjax.teacher.commands import run_cot, run_difficulty

        args = build_parser().parse_args(["data", command, *argv])
        return {"cot": run_cot, "difficulty": run_difficulty}[command](args)

    return run
