"""The arguments of `vrsjax infer` and `vrsjax predict` and the translation of parsed arguments into library calls.

Kept out of `vrsjax/cli.py` because both commands share the segmenter and pipeline options. Importing this module
is cheap (argparse only); the pipelines load when a command runs. Bad input (an unreadable video, an empty query,
a checkpoint of another model, missing segmenter weights) raises ValueError/FileNotFoundError naming the problem,
which `vrsjax.cli.main` prints as one line.
"""

from __future__ import annotations

import argparse
import json
import warnings

from vrsjax.argtypes import positive_int


def add_parsers(sub) -> None:
    """Adds `infer` and `predict` to the `vrsjax` subcommands."""
    infer = sub.add_parser("infer", help="segment the object a query refers to in one video (masks, overlay, JSON)")
    infer.add_argument("--checkpoint", required=True, help="Qwen2.5-VL checkpoint directory (HF or converted)")
    infer.add_argument("--video", required=True, help="a video file (mp4, avi, ...) or a folder of frames")
    infer.add_argument("--query", required=True, help="the expression or question, e.g. 'the dog that jumps first'")
    infer.add_argument("--out", required=True, help="output folder: masks/, overlay.mp4|gif, result.json")
    infer.add_argument("--overlay", default="mp4", choices=["mp4", "gif"], help="overlay video format")
    _add_common(infer)
    infer.set_defaults(func=run_infer)

    predict = sub.add_parser("predict", help="predict masks for a dataset split in the benchmark layout (resumable)")
    predict.add_argument("--dataset", default=None, help="revos|mevis|refytvos|davis17|reasonvos (default: detect)")
    predict.add_argument("--data", required=True, help="dataset root")
    predict.add_argument("--split", default=None, help="split (default: the reader's, e.g. revos: train)")
    predict.add_argument("--checkpoint", required=True, help="Qwen2.5-VL checkpoint directory (HF or converted)")
    predict.add_argument("--out", required=True, help="prediction root: OUT/<video>/<exp_id>/<frame>.png")
    predict.add_argument("--limit", type=positive_int, default=None, help="only the first N expressions (quick runs)")
    predict.add_argument("--batch-size", type=positive_int, default=4, help="Veason-R1 expressions per generate call")
    predict.add_argument("--mesh", default=None, help="DATA,FSDP,TENSOR device mesh, e.g. 8,1,1 (-1: the rest)")
    _add_common(predict)
    predict.set_defaults(func=run_predict)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default="veason", choices=["veason", "videoseg"])
    parser.add_argument("--sam2-config", default="hiera_l", help="hiera_t|hiera_s|hiera_b+|hiera_l or a sam2 config")
    parser.add_argument("--sam2-checkpoint", default=None, help="official SAM2 .pt (e.g. sam2.1_hiera_large.pt)")
    parser.add_argument("--sam2-random", action="store_true", help="random SAM2 weights (tests and demos only)")
    parser.add_argument("--sam2-image-size", type=int, default=None, help="SAM2 input size (default 1024)")
    parser.add_argument("--xmem-checkpoint", default=None, help="official XMem.pth (videoseg with --propagator xmem)")
    parser.add_argument("--xmem-random", action="store_true", help="random XMem weights (tests and demos only)")
    parser.add_argument("--propagator", default="xmem", choices=["xmem", "sam2"], help="videoseg mask propagation")
    parser.add_argument("--device", default="cpu", help="torch device of SAM2/XMem: cpu, cuda, cuda:N, auto")
    parser.add_argument("--seed", type=int, default=0, help="random segmenter weights and the sampler's draws")
    parser.add_argument("--max-new-tokens", type=positive_int, default=1024)
    parser.add_argument("--frame-size", type=positive_int, default=None, help="square size of the frames shown (560)")
    parser.add_argument(
        "--num-frames", type=positive_int, default=None, help="veason: frames shown (8); videoseg: per query"
    )
    parser.add_argument("--target-size", type=positive_int, default=None, help="videoseg: target frame size (840)")
    parser.add_argument("--sampler", default=None, help="videoseg sampler as JSON, e.g. '{\"num_intervals\": 4}'")


def segmenter_options(args: argparse.Namespace):
    from vrsjax.inference.segmenters import SegmenterOptions

    return SegmenterOptions(
        sam2_config=args.sam2_config,
        sam2_checkpoint=args.sam2_checkpoint,
        sam2_random=args.sam2_random,
        sam2_image_size=args.sam2_image_size,
        xmem_checkpoint=args.xmem_checkpoint,
        xmem_random=args.xmem_random,
        device=args.device,
        seed=args.seed,
    )


def pipeline_config(args: argparse.Namespace):
    """VeasonConfig or VideoSegConfig from the command line (unset options keep the pipeline's defaults)."""
    from vrsjax.inference.veason import VeasonConfig
    from vrsjax.inference.videoseg import VideoSegConfig

    if args.pipeline == "veason":
        if args.sampler or args.target_size:
            raise ValueError("--sampler and --target-size apply to --pipeline videoseg")
        options = {"num_frames": args.num_frames, "size": args.frame_size}
        return VeasonConfig(max_new_tokens=args.max_new_tokens, **{k: v for k, v in options.items() if v})
    try:
        sampler = json.loads(args.sampler) if args.sampler else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"--sampler {args.sampler!r} is not a JSON object ({err})") from err
    sizes = {"sampler_size": args.frame_size, "context_size": args.frame_size, "target_size": args.target_size}
    options = {"sampler_frames": args.num_frames, **sizes}
    options = {k: v for k, v in options.items() if v} | sampler
    try:
        return VideoSegConfig(max_new_tokens=args.max_new_tokens, propagator=args.propagator, seed=args.seed, **options)
    except TypeError as err:  # an unknown --sampler key
        raise ValueError(f"--sampler: {err}") from err


# Warnings that every SAM2 run prints and that say nothing to a user: sam2 scripts its transforms with the
# deprecated torch.jit.script, and its optional CUDA extension `_C` (hole filling) is not built (see the Makefile).
KNOWN_WARNINGS = (
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    (UserWarning, r"(?s)cannot import name '_C' from 'sam2'.*Skipping the post-processing step"),
)


def silence_known_warnings() -> None:
    """Filters out KNOWN_WARNINGS, and only those (by category and message)."""
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def run_infer(args: argparse.Namespace) -> int:
    from vrsjax.inference.infer_video import infer

    silence_known_warnings()
    result, paths = infer(
        args.checkpoint,
        args.video,
        args.query,
        args.out,
        pipeline=args.pipeline,
        segmenters=segmenter_options(args),
        config=pipeline_config(args),
        overlay_format=args.overlay,
    )
    status = "parsed" if result.parse_ok else "did not parse (fallback box used)"
    print(f"answer {status}; keyframe {result.keyframe}, boxes {result.boxes}")
    print(f"wrote {paths['masks']}/ ({len(result.masks)} masks), {paths['overlay']}, {paths['result']}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from vrsjax.inference.predict_split import predict

    silence_known_warnings()
    report = predict(
        args.data,
        args.out,
        checkpoint=args.checkpoint,
        dataset=args.dataset,
        split=args.split,
        pipeline=args.pipeline,
        segmenters=segmenter_options(args),
        config=pipeline_config(args),
        batch_size=args.batch_size,
        limit=args.limit,
        mesh=_mesh(args.mesh),
    )
    print(report.line())
    return 0


def _mesh(text: str | None):
    if not text:
        return None
    try:
        data, fsdp, tensor = (int(v) for v in text.split(","))
    except ValueError as err:
        raise ValueError(f"--mesh {text!r}: expected three integers DATA,FSDP,TENSOR, e.g. 8,1,1") from err
    from vrsjax.parallel.mesh import make_mesh

    return make_mesh(data, fsdp, tensor)
