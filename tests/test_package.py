"""Package-level behaviour: importing vrsjax stays free of torch, the CLI answers --help, the demo runs."""

import subprocess
import sys

import pytest

from vrsjax.cli import main


def test_import_does_not_import_torch():
    code = (
        "import sys, vrsjax, vrsjax.cli, vrsjax.models.qwen2_5_vl, vrsjax.parallel.rules, vrsjax.testing, "
        "vrsjax.demo, vrsjax.checkpoint; bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("argv", [["--help"], ["convert", "--help"], ["demo", "--help"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: vrsjax" in capsys.readouterr().out
