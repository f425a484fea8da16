"""One style of error everywhere: a user error is one line `vrsjax <command>: <message>` and exit status 1;
`--debug` (before or after the command) shows the traceback; bad flag values are usage errors (exit 2)."""

import pytest

from vrsjax.cli import main


def one_line_error(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_input_file_is_one_line(tmp_path):
    message = one_line_error(["data", "subset", str(tmp_path / "nope.json"), str(tmp_path / "o.json"), "--size", "3"])
    assert message.startswith("vrsjax data subset: ") and "nope.json" in message


def test_debug_shows_the_original_error(tmp_path):
    argv = ["data", "subset", str(tmp_path / "nope.json"), str(tmp_path / "o.json"), "--size", "3"]
    with pytest.raises(FileNotFoundError):
        main(["--debug", *argv])
    with pytest.raises(FileNotFoundError):
        main([*argv, "--debug"])


def test_config_errors_of_long_commands_are_one_line(tmp_path):
    message = one_line_error(["train-grpo", f"config={tmp_path / 'nope.yaml'}"])
    assert message.startswith("vrsjax train-grpo: config file") and "nope.yaml" in message
    message = one_line_error(["train-grpo", "config=configs/base.yaml", "worker.nope=1", "worker.nix=2"])
    assert "worker.nope: unknown key" in message and "worker.nix: unknown key" in message
    message = one_line_error(["train-sft", f"config={tmp_path / 'nope.yaml'}"])
    assert message.startswith("vrsjax train-sft: config file")


def test_convert_and_inspect_errors_are_one_line(tmp_path):
    message = one_line_error(["convert", "hf-to-vrsjax", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert message.startswith("vrsjax convert: ") and "config.json" in message
    message = one_line_error(["convert", "vrsjax-to-hf", str(tmp_path), str(tmp_path / "o"), "--adapter", "x"])
    assert message.startswith("vrsjax convert: --adapter")
    message = one_line_error(["data", "inspect", str(tmp_path)])
    assert message.startswith("vrsjax data inspect: cannot tell the dataset layout")
    message = one_line_error(["data", "build", str(tmp_path), "--out", str(tmp_path / "r")])
    assert message.startswith("vrsjax data build: cannot tell the dataset layout")


def test_data_synth_out_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    message = one_line_error(["data", "synth", "--out", str(tmp_path / "f"), "--videos", "1"])
    assert message.startswith("vrsjax data synth: --out ") and "is a file" in message


@pytest.mark.parametrize(
    "argv, flag",
    [
        (
            ["infer", "--checkpoint", "c", "--video", "v", "--query", "q", "--out", "o", "--frame-size", "0"],
            "--frame-size",
        ),
        (["data", "synth", "--out", "o", "--videos", "0"], "--videos"),
        (["data", "synth", "--out", "o", "--videos", "-3"], "--videos"),
        (["convert", "vrsjax-to-hf", "a", "b", "--max-shard-gb", "0"], "--max-shard-gb"),
        (["convert", "vrsjax-to-hf", "a", "b", "--max-shard-gb", "-1"], "--max-shard-gb"),
        (["plan", "--headroom", "5"], "--headroom"),
        (["plan", "--headroom", "0"], "--headroom"),
        (["serve", "--checkpoint", "c", "--max-request-mb", "-1"], "--max-request-mb"),
        (["predict", "--data", "d", "--checkpoint", "c", "--out", "o", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_flag_values_are_refused_by_the_parser(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {flag}: expected" in capsys.readouterr().err


def test_training_commands_name_a_missing_model_in_one_line(tmp_path):
    message = one_line_error(["train-grpo", "config=configs/base.yaml"])
    assert message == (
        "vrsjax train-grpo: worker.actor.model.model_path is not set: point it at an HF or converted Qwen2.5-VL dir"
    )
    message = one_line_error(["train-grpo", "config=configs/base.yaml", f"worker.actor.model.model_path={tmp_path}"])
    assert message.startswith("vrsjax train-grpo: ") and "no config.json" in message
    message = one_line_error(["train-sft", "config=configs/sft_veason_3b.yaml", f"model_name_or_path={tmp_path}"])
    assert message.startswith("vrsjax train-sft: ") and str(tmp_path) in message
