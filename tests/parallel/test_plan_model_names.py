"""`vrsjax plan --model`: a preset is named by a whole word of the name (3b, Qwen2.5-VL-7B-Instruct); any other name
is an error listing the presets, not a silent plan of the preset whose name it happens to contain (13b -> 3b)."""

import pytest

from vrsjax.cli import main
from vrsjax.parallel import plan


@pytest.mark.parametrize(
    "name, key", [("3b", "3B"), ("7B", "7B"), ("Qwen/Qwen2.5-VL-3B-Instruct", "3B"), ("qwen2_5_vl_7b", "7B")]
)
def test_preset_names(name, key):
    assert plan.resolve_model(name)[1] == f"Qwen2.5-VL-{key} preset"


@pytest.mark.parametrize("name", ["13b", "Qwen2.5-VL-32B-Instruct", "73b", "3bx"])
def test_other_names_list_the_presets(name):
    with pytest.raises(ValueError, match="the presets are 3b .*7b"):
        plan.resolve_model(name)


def test_cli_unknown_model_is_one_line_exit_1():
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "config=configs/veason_r1_3b.yaml", "--model", "13b"])
    message = str(exit_info.value.code)
    assert message.startswith("vrsjax plan: --model '13b': not a directory") and "3b (Qwen2.5-VL-3B)" in message
