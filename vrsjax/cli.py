"""The `vrsjax` command. Thin: it parses arguments and calls library functions.

vrsjax convert hf-to-vrsjax HF_DIR OUT_DIR [--dtype bfloat16] [--adapter LORA_DIR]
vrsjax convert vrsjax-to-hf SRC_DIR OUT_DIR [--layout v5|legacy] [--dtype bfloat16] [--max-shard-gb 5]
vrsjax demo [--seed S] [--quick] [--out DIR] [--overwrite]   (CoT SFT + GRPO on synthetic videos; exit 1 if not learned)
vrsjax train-grpo config=configs/veason_r1_3b.yaml [dotted.key=value ...]
vrsjax train-sft config=configs/sft_veason_3b.yaml [key=value ...]   (LLaMA-Factory keys; LoRA merged + HF export)
vrsjax data synth --out DIR [--videos N] [--seed S] | data inspect DIR | data build DIR --out RECORDS
vrsjax data subset META OUT --size N
vrsjax data cot|difficulty --dataset DIR --out FILE --endpoint URL --model NAME   (teacher-model data)
vrsjax serve --checkpoint DIR [--port 8000] [--host 127.0.0.1] [--max-batch 8] [--max-request-mb 32]
vrsjax plan config=RECIPE [key=value ...] [--devices 8] [--device h100|h200|v5p|v6e] [--model 3b|7b|DIR]
vrsjax lower --platform tpu|cuda --model tiny|small|3b|7b --mesh data=1,fsdp=2,tensor=2 --out DIR [--layers N]
             [--seq 1024] [--batch B] [--n 8] [--response 128] [--dtype bfloat16]   (jax.export, shapes only)
vrsjax bench [--only NAME,...] [--quick] [--repeats N] [--out BENCHMARKS.md]   (from a repository checkout)
vrsjax eval --dataset revos|mevis|reasonvos|refytvos|davis17|image --data DIR --pred DIR [--split S] [--out R.json]
vrsjax infer --checkpoint DIR --video FILE|DIR --query "..." --out DIR [--pipeline veason|videoseg] [--sam2-...]
vrsjax predict --dataset revos --data DIR --split valid --checkpoint DIR --out DIR [--limit N] [--batch-size B]
"""

from __future__ import annotations

import argparse
import sys

from vrsjax.argtypes import fraction, positive_float, positive_int


def _convert(args: argparse.Namespace) -> int:
    from vrsjax.errors import UserError
    from vrsjax.models.qwen2_5_vl import params

    if args.direction == "hf-to-vrsjax":
        out = params.convert_hf_to_vrsjax(args.src, args.dst, dtype=args.dtype or "float32", adapter_dir=args.adapter)
    else:
        if args.adapter:
            raise UserError("--adapter is merged when converting hf-to-vrsjax; drop it for vrsjax-to-hf")
        out = params.convert_vrsjax_to_hf(
            args.src, args.dst, layout=args.layout, dtype=args.dtype, max_shard_bytes=int(args.max_shard_gb * 2**30)
        )
    print(f"wrote {out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from vrsjax import demo

    result = demo.run(args.out, quick=args.quick, seed=args.seed, overwrite=args.overwrite)
    return 1 if result["passed"] is False else 0


def _train_grpo(args: argparse.Namespace) -> int:
    from vrsjax.rl import run

    run.main(args.overrides, debug=args.debug)
    return 0


def _train_sft(args: argparse.Namespace) -> int:
    from vrsjax.sft import run

    run.main(args.overrides)
    return 0


def _data(args: argparse.Namespace) -> int:
    from vrsjax.data import commands

    return commands.run(args)


def _plan(args: argparse.Namespace) -> int:
    from vrsjax.parallel import plan

    text, result = plan.run(
        args.overrides,
        devices=args.devices,
        device=args.device,
        model=args.model,
        attention=args.attention,
        vision_tokens=args.vision_tokens,
        sam2=args.sam2,
        headroom=args.headroom,
        as_json=args.json,
    )
    print(text)
    return 0 if result.fits else 2


def _lower(args: argparse.Namespace) -> int:
    from vrsjax import lower

    settings = lower.Settings(
        platform=args.platform,
        model=args.model,
        mesh=lower.parse_mesh(args.mesh),
        layers=args.layers,
        seq=args.seq,
        batch=args.batch,
        n=args.n,
        response=args.response,
        dtype=args.dtype,
    )
    summary = lower.run(settings, args.out)
    for a in summary["artifacts"]:
        print(f"{a['file']}: {a['devices']} devices, attention {a['attention']}")
    print(f"wrote {args.out}/summary.json")
    return 0


_BENCH_OPTIONS = ("only", "repeats", "out", "timeout", "xmem_official")


def _serve(args: argparse.Namespace) -> int:
    from vrsjax.serve import serve

    return serve(
        args.checkpoint,
        args.port,
        args.host,
        max_batch=args.max_batch,
        max_request_mb=args.max_request_mb,
        batch_window_ms=args.batch_window_ms,
        model_name=args.model_name,
        dtype=args.dtype,
    )


def _bench(args: argparse.Namespace) -> int:
    """Hands the arguments to benchmarks/suite.py of the checkout (the benchmarks folder is not installed)."""
    import importlib.util
    from pathlib import Path

    candidates = [Path.cwd() / "benchmarks", Path(__file__).resolve().parents[1] / "benchmarks"]
    folder = next((c for c in candidates if (c / "suite.py").exists()), None)
    if folder is None:
        raise SystemExit("vrsjax bench: benchmarks/suite.py not found; run it from a vrsjax repository checkout")
    spec = importlib.util.spec_from_file_location("vrsjax_bench_suite", folder / "suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in _BENCH_OPTIONS and v is not None]
    return suite.main(argv + ["--quick"] * args.quick + ["--list"] * args.list)


def _eval(args: argparse.Namespace) -> int:
    from vrsjax.eval import evaluate

    options = dict(r_convention=args.r_convention, iou_convention=args.iou_convention, workers=args.workers)
    evaluate.run(args.dataset, args.data, args.pred, args.out, args.split, **options)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrsjax", description="Video reasoning segmentation in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="convert Qwen2.5-VL weights between Hugging Face and vrsjax")
    convert.add_argument("direction", choices=["hf-to-vrsjax", "vrsjax-to-hf"])
    convert.add_argument("src", help="source checkpoint directory")
    convert.add_argument("dst", help="output directory")
    convert.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="cast the weights (default: float32 for hf-to-vrsjax, unchanged for vrsjax-to-hf)",
    )
    convert.add_argument("--adapter", default=None, help="PEFT LoRA adapter dir to merge (hf-to-vrsjax)")
    convert.add_argument(
        "--layout",
        choices=["v5", "legacy"],
        default="v5",
        help="HF key layout to write: v5 = model.language_model.*, legacy = model.*/visual.*",
    )
    convert.add_argument(
        "--max-shard-gb", type=positive_float, default=5.0, help="shard safetensors above this size (> 0)"
    )
    convert.set_defaults(func=_convert)

    demo = sub.add_parser("demo", help="CoT SFT then GRPO of a tiny policy on synthetic videos, J&F before/after")
    demo.add_argument("--out", default="demo_out", help="output folder (its earlier demo files are replaced)")
    demo.add_argument("--overwrite", action="store_true", help="write into a non-empty folder vrsjax did not write")
    demo.add_argument("--seed", type=int, default=None, help="seed of the data, model and training (default 0)")
    demo.add_argument("--quick", action="store_true", help="a few steps of each stage; no learning check (CI)")
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train-grpo", help="GRPO training from a recipe: config=configs/x.yaml key=value ...")
    train.add_argument("overrides", nargs="*", help="config=PATH and dotted overrides, e.g. worker.rollout.n=8")
    train.set_defaults(func=_train_grpo)

    sft = sub.add_parser("train-sft", help="CoT SFT (full or LoRA) from a LLaMA-Factory recipe: config=x.yaml ...")
    sft.add_argument("overrides", nargs="*", help="config=PATH and overrides, e.g. learning_rate=2e-4 lora_rank=16")
    sft.set_defaults(func=_train_sft)

    data = sub.add_parser("data", help="synthetic data, dataset statistics, ArrayRecord builds")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="write a synthetic dataset in the ReVOS layout (+ CoT SFT data)")
    synth.add_argument("--out", required=True, help="output folder: new, empty, or one vrsjax wrote before")
    synth.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty folder, replacing only what synth writes"
    )
    synth.add_argument("--videos", type=positive_int, default=8, help="number of videos (at least 1)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--layout",
        action="append",
        choices=["mevis", "refytvos", "davis17", "reasonvos", "image_json"],
        help="also write the data in this layout next to --out (repeatable)",
    )
    inspect = data_sub.add_parser("inspect", help="counts, per-type statistics and a PNG grid of frames with masks")
    inspect.add_argument("root", help="dataset root (or image .json/.jsonl file)")
    inspect.add_argument(
        "--format", default=None, help="revos|mevis|refytvos|davis17|reasonvos|image_json (default: detect)"
    )
    inspect.add_argument("--split", default=None)
    inspect.add_argument("--png", default="data_inspect.png", help="grid image to write ('' for none)")
    inspect.add_argument("--expressions", type=int, default=4, help="rows in the grid")
    inspect.add_argument("--json", action="store_true", help="print the statistics as JSON")
    build = data_sub.add_parser("build", help="read a dataset split and write its TFDS ArrayRecord files for grain")
    build.add_argument("root", help="dataset root as downloaded")
    build.add_argument("--out", required=True, help="records directory")
    build.add_argument("--format", default=None, help="dataset layout (default: detect)")
    build.add_argument("--split", default=None)
    build.add_argument("--meta-file", default=None, help="ReVOS: another expressions file, e.g. a training subset")
    build.add_argument(
        "--skip-bad-samples", action="store_true", help="count and report bad samples instead of failing"
    )
    build.add_argument("--overwrite", action="store_true")
    subset = data_sub.add_parser("subset", help="Veason-R1's stratified training subset of a ReVOS expressions file")
    subset.add_argument("meta", help="e.g. data/ReVOS/meta_expressions_train_.json")
    subset.add_argument("out", help="e.g. data/ReVOS/meta_expressions_train_select.json")
    subset.add_argument("--size", type=positive_int, required=True, help="expressions to keep (at least 1)")
    subset.add_argument("--seed", type=int, default=0)
    from vrsjax.teacher.commands import add_cot_arguments, add_difficulty_arguments

    add_cot_arguments(data_sub.add_parser("cot", help="Veason-R1 CoT SFT data written by a teacher VLM (ShareGPT)"))
    add_difficulty_arguments(data_sub.add_parser("difficulty", help="VideoSeg-R1 difficulty ratings by a teacher"))
    data.set_defaults(func=_data)

    srv = sub.add_parser("serve", help="OpenAI-compatible /v1/chat/completions server over a checkpoint")
    srv.add_argument("--checkpoint", required=True, help="HF-format Qwen2.5-VL directory (with tokenizer)")
    srv.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    srv.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    srv.add_argument("--max-batch", type=positive_int, default=8, help="requests per generate call")
    srv.add_argument("--max-request-mb", type=positive_float, default=32.0, help="larger bodies get 413 (> 0)")
    srv.add_argument("--batch-window-ms", type=float, default=5.0, help="wait for more requests before a batch")
    srv.add_argument("--model-name", default=None, help="the model id clients send (default: the folder name)")
    srv.add_argument("--dtype", default="float32", help="float32|bfloat16")
    srv.set_defaults(func=_serve)

    plan = sub.add_parser("plan", help="memory per device of a GRPO recipe on a mesh; says whether it fits")
    plan.add_argument("overrides", nargs="*", help="config=PATH and dotted overrides, e.g. mesh.tensor=2")
    plan.add_argument("--devices", type=int, default=8, help="devices in the mesh (all hosts)")
    plan.add_argument("--device", default="h100", choices=["h100", "h200", "v5p", "v6e"])
    plan.add_argument("--model", default=None, help="3b, 7b or an HF dir (default: worker.actor.model.model_path)")
    plan.add_argument("--attention", default="reference", choices=["reference", "xla", "cudnn", "splash"])
    plan.add_argument("--vision-tokens", type=int, default=None, help="per prompt (default: 400 per sampled frame)")
    plan.add_argument("--sam2", default="hiera_l", help="hiera_t|hiera_s|hiera_b+|hiera_l|none on the device")
    plan.add_argument("--headroom", type=fraction, default=0.9, help="usable fraction of device memory, in (0, 1]")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(func=_plan)

    low = sub.add_parser("lower", help="export the policy's jitted steps for TPU or CUDA from this host (jax.export)")
    low.add_argument("--platform", required=True, choices=["tpu", "cuda"])
    low.add_argument("--model", default="tiny", choices=["tiny", "small", "3b", "7b"])
    low.add_argument("--mesh", default="fsdp=1", help="mesh axis sizes, e.g. data=2,fsdp=2,tensor=2 (host devices)")
    low.add_argument("--layers", type=int, default=None, help="keep only this many decoder layers")
    low.add_argument("--seq", type=int, default=1024, help="prompt tokens: a 4-frame video, then text")
    low.add_argument("--batch", type=int, default=None, help="prompts (default: one per data x fsdp device)")
    low.add_argument("--n", type=int, default=8, help="responses per prompt (the group)")
    low.add_argument("--response", type=int, default=128, help="response tokens")
    low.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    low.add_argument("--out", required=True, help="directory for <name>.<platform>.bin and summary.json")
    low.set_defaults(func=_lower)

    bench = sub.add_parser("bench", help="every benchmark vs its reference, side by side; regenerates BENCHMARKS.md")
    bench.add_argument("--only", default=None, help="comma-separated benchmark names (see --list; default: all)")
    bench.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    bench.add_argument("--repeats", type=int, default=None, help="repeats per timing, for benchmarks that repeat")
    bench.add_argument("--out", default=None, help="the markdown file to regenerate (default: BENCHMARKS.md)")
    bench.add_argument("--timeout", type=float, default=None, help="seconds per benchmark before it is killed")
    bench.add_argument("--xmem-official", default=None, help="a checkout of hkchengrex/XMem for the XMem comparison")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bench.set_defaults(func=_bench)

    ev = sub.add_parser("eval", help="score predicted PNG masks on a benchmark split: J, F, J&F, R or gIoU/cIoU")
    ev.add_argument("--dataset", required=True, choices=["revos", "mevis", "reasonvos", "refytvos", "davis17", "image"])
    ev.add_argument("--data", required=True, help="dataset root (for --dataset image: the .json/.jsonl file)")
    ev.add_argument("--split", default=None, help="default: revos valid, mevis valid_u, else the reader's")
    ev.add_argument("--pred", required=True, help="predictions: PRED/<video>/<exp_id>/<frame>.png")
    ev.add_argument("--out", default=None, help="JSON report to write")
    ev.add_argument("--r-convention", default="visa", choices=["visa", "binary"], help="ReVOS R and A arithmetic")
    ev.add_argument("--iou-convention", default="lisa", choices=["lisa", "seg_zero"], help="image gIoU/cIoU")
    ev.add_argument("--workers", type=int, default=None, help="threads scoring expressions (default: min(8, CPUs))")
    ev.set_defaults(func=_eval)

    from vrsjax.inference.commands import add_parsers  # `infer` and `predict` share their options

    add_parsers(sub)
    _add_debug(parser, False)
    return parser


# Every command prints UserError (and its subclasses DataError, ConfigError, BadPrediction, ...) and a missing or
# misplaced file as one line. The commands that only read files and flags also print a ValueError so: there it is
# the user's input. train-grpo, train-sft, demo, lower and bench run long jobs where a ValueError more likely is a
# bug, so they keep its traceback (raise UserError there for what the user can fix).
_FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)
_CHECKS_INPUT = {"convert", "data", "serve", "plan", "eval", "infer", "predict"}


def _command_name(args: argparse.Namespace) -> str:
    """'vrsjax data synth', 'vrsjax plan': the prefix of the one-line error."""
    return " ".join(["vrsjax", args.command] + ([args.data_command] if args.command == "data" else []))


def _add_debug(parser: argparse.ArgumentParser, default) -> None:
    """--debug before or after the subcommand; SUPPRESS keeps a subparser from resetting the top-level value."""
    parser.add_argument("--debug", action="store_true", default=default, help="show the traceback of an error")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child, argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    """Runs one command. A user error ends it with one line on stderr and exit status 1 (SystemExit, as argparse
    does for a bad flag); `--debug` re-raises it with its traceback."""
    from vrsjax.errors import UserError

    args = build_parser().parse_args(argv)
    caught = (UserError, *_FILE_ERRORS, *((ValueError,) if args.command in _CHECKS_INPUT else ()))
    try:
        return args.func(args)
    except caught as err:
        if args.debug:
            raise
        raise SystemExit(f"{_command_name(args)}: {_one_line(err)}") from err


def _one_line(err: BaseException) -> str:
    """The message on one line (a ConfigError lists its keys on several); an OSError keeps its file name."""
    parts = [part.strip() for part in (str(err) or type(err).__name__).splitlines() if part.strip()]
    return "".join(p if i == 0 else (" " if parts[i - 1].endswith(":") else "; ") + p for i, p in enumerate(parts))


if __name__ == "__main__":
    sys.exit(main())
