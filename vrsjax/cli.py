"""The `vrsjax` command. Thin: it parses arguments and calls library functions.

vrsjax convert hf-to-vrsjax HF_DIR OUT_DIR [--dtype bfloat16] [--adapter LORA_DIR]
vrsjax convert vrsjax-to-hf SRC_DIR OUT_DIR [--layout v5|legacy] [--dtype bfloat16] [--max-shard-gb 5]
vrsjax demo [--out DIR]
"""

from __future__ import annotations

import argparse
import sys


def _convert(args: argparse.Namespace) -> int:
    from vrsjax.models.qwen2_5_vl import params

    if args.direction == "hf-to-vrsjax":
        out = params.convert_hf_to_vrsjax(args.src, args.dst, dtype=args.dtype or "float32", adapter_dir=args.adapter)
    else:
        if args.adapter:
            raise SystemExit("--adapter is merged when converting hf-to-vrsjax")
        out = params.convert_vrsjax_to_hf(
            args.src, args.dst, layout=args.layout, dtype=args.dtype, max_shard_bytes=int(args.max_shard_gb * 2**30)
        )
    print(f"wrote {out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from vrsjax import demo

    demo.run(args.out)
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
    convert.add_argument("--max-shard-gb", type=float, default=5.0, help="shard safetensors above this size")
    convert.set_defaults(func=_convert)

    demo = sub.add_parser("demo", help="tiny checkpoint -> convert -> run the policy on a synthetic video")
    demo.add_argument("--out", default="demo_out", help="working directory (recreated)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
