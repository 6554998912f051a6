"""`vfnet export onnx ...` and `vfnet export openvino ...` (checkpoints to deployable graphs) and
`vfnet export trt ...` (ONNX files to TensorRT engines; no torch).

One `run_<target>(args)` per subcommand, chosen by argparse (`set_defaults(run=...)`); each turns
its flags into a call of its target's `export_<target>` and its errors into one line and an exit code.
A new target: a file with its `export_<target>`, a subparser here and its `run_<target>`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  vfnet export onnx --weights vfnet_r50.safetensors --out vfnet_r50.onnx
  vfnet export onnx --weights vfnet_r50.safetensors --out vfnet_r50_fp16.onnx --fp16     # for TensorRT 11
  vfnet export onnx --weights demo.safetensors --out demo_raw.onnx --raw                 # head outputs, for parity
  vfnet export onnx --weights vfnet_r50.safetensors --out vfnet_r50_plugin.onnx --plugin # StarDeformConv nodes
  vfnet export onnx --weights demo.safetensors --out demo_int8.onnx --int8 --calibration photos/   # CPU int8
  vfnet export openvino --weights vfnet_r50.safetensors --out vfnet_r50_ir/          # CPU bf16: model.xml + .bin
  vfnet export openvino --weights vfnet_r50.safetensors --out vfnet_r50_int8/ --int8 --calibration photos/   # CPU int8 (VNNI, AMX)
  vfnet export trt --onnx vfnet_r50_fp16.onnx --out vfnet_r50_fp16.engine --max-batch 8 --timing-cache trt.cache
  vfnet export onnx --weights vfnet_r50_fpn_mstrain_2x_coco --out r50.onnx    # a zoo name (`vfnet models`): pulled once
  vfnet export trt --weights vfnet_r50_fpn_mstrain_2x_coco --out r50.engine   # from its cached ONNX export
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfnet export",
        description="Export a vfnet-serve checkpoint to a deployable graph.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    targets = parser.add_subparsers(dest="target", required=True, metavar="{onnx,openvino,trt}")

    def target(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return targets.add_parser(name, help=summary, description=description, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)

    def zoo_flags(parser: argparse.ArgumentParser) -> None:
        from vfnet.server.zoo.cli import add_zoo_flags

        add_zoo_flags(parser)

    def from_checkpoint(parser: argparse.ArgumentParser, out_help: str, **out) -> None:
        """The arguments of every target made from a checkpoint."""
        parser.add_argument("--weights", required=True, help="vfnet-serve checkpoint (.safetensors), or a zoo model name (pulled on first use)")
        zoo_flags(parser)
        parser.add_argument("--out", required=True, type=Path, help=out_help, **out)
        parser.add_argument("--max-detections", type=int, metavar="N", help="detections per image K (default: the checkpoint's, 100)")

    onnx = target(
        "onnx",
        "one ONNX file: uint8 images in, NMS-ed detections out (standard operators, opset 19)",
        "Export the whole inference contract (normalisation, network, decoding, class-aware NMS) "
        "to one ONNX file with dynamic batch, height and width, metadata inside, checked by onnx.checker.",
    )
    onnx.set_defaults(run=run_onnx)
    from_checkpoint(onnx, "output .onnx file")
    onnx.add_argument("--fp16", action="store_true", help="float16 network (outputs stay float32); for TensorRT 11")
    onnx.add_argument(
        "--fp16-storage", action="store_true", help="store weights as float16 where they restore exactly (about half the file; computes in float32)"
    )
    onnx.add_argument("--raw", action="store_true", help="output the raw per-level head tensors instead of detections")
    onnx.add_argument(
        "--plugin",
        action="store_true",
        help="write each star deformable convolution as one StarDeformConv node (our TensorRT plugin, domain trt.plugins); "
        "runs on CPU with the plugin's host build (make plugins)",
    )
    int8_flags(onnx, "int8 convolutions (static QDQ, for ONNX Runtime on the CPU), calibrated on --calibration images; the rest stays float32")
    openvino = target(
        "openvino",
        "an OpenVINO IR (DIR/model.xml + model.bin): the whole contract, NMS included, for CPUs (bfloat16 where they have it)",
        "Export the whole inference contract to an OpenVINO IR with dynamic batch, height and width and the model card "
        "in its rt_info. Served by the openvino backend: float32, or bfloat16 on CPUs with AVX512_BF16 or AMX.",
    )
    openvino.set_defaults(run=run_openvino)
    from_checkpoint(openvino, "output folder (model.xml and model.bin are written in it)", metavar="DIR")
    int8_flags(
        openvino,
        "int8 through NNCF's post-training quantization (MIXED preset, full bias correction; the decoding and NMS tail stays float), "
        "calibrated on --calibration images: for CPUs with VNNI or AMX; the rest runs in bf16 where the CPU has it. Needs nncf (the export extra)",
    )
    trt = target(
        "trt",
        "a TensorRT engine from one of our ONNX files (needs TensorRT and a GPU)",
        "Build a TensorRT engine (strongly typed: the ONNX graph's precision) for one shape profile, and "
        "write its model card and manifest (TensorRT version, GPU, hashes, profile) to ENGINE.json beside it.",
    )
    trt.set_defaults(run=run_trt)
    source = trt.add_mutually_exclusive_group(required=True)
    source.add_argument("--onnx", type=Path, help="an ONNX file from `vfnet export onnx` (standard or --plugin)")
    source.add_argument("--weights", metavar="NAME", help="a zoo model name: the engine is built from its cached ONNX export (made on first use)")
    zoo_flags(trt)
    trt.add_argument("--out", required=True, type=Path, help="output .engine file")
    trt.add_argument("--plugin-lib", type=Path, help="TensorRT plugin library (default: build/plugins/libvfnet_trt_plugins.so when the graph needs it)")
    trt.add_argument("--min-batch", type=int, default=1, help="smallest batch of the profile (default 1)")
    trt.add_argument("--opt-batch", type=int, help="the batch to optimise for (default: --max-batch)")
    trt.add_argument("--max-batch", type=int, default=8, help="largest batch (default 8, the server's max_batch_size)")
    for which, meaning in (("min", "smallest"), ("opt", "optimised-for"), ("max", "largest")):
        trt.add_argument(
            f"--{which}-canvas", type=canvas, metavar="HxW", help=f"{meaning} padded canvas, height x width (default: from the model's input size)"
        )
    trt.add_argument("--timing-cache", type=Path, help="read and update this TensorRT timing cache (speeds up later builds)")
    trt.add_argument(
        "--tf32", action="store_true", help="let float32 layers multiply in TF32 (TensorRT's own default; without it an fp32 engine computes in fp32)"
    )
    trt.add_argument("--workspace", type=float, default=4.0, metavar="GiB", help="builder workspace limit in GiB (default 4)")
    trt.add_argument(
        "--builder-optimization-level", type=int, default=3, choices=range(6), metavar="0-5", help="TensorRT's builder optimisation level (default 3)"
    )
    return parser


def canvas(text: str) -> tuple[int, int]:
    """'800x1344' -> (800, 1344)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 800x1344") from None
    return height, width


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def failed(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def int8_flags(parser: argparse.ArgumentParser, help: str) -> None:
    """--int8 and its calibration flags, and --sampled-star, the same for every target that quantizes."""
    parser.add_argument("--int8", action="store_true", help=help)
    parser.add_argument(
        "--sampled-star",
        action="store_true",
        help="write each star deformable convolution as the same function in a form --int8 then quantizes too: for ONNX its 9 bilinear "
        "samplings (GridSample) and a 1x1 convolution, for OpenVINO a Gather of its 25 bilinear corners and a matrix product "
        "(see README: where it is faster)",
    )
    parser.add_argument("--calibration", type=Path, metavar="DIR", help="with --int8: a folder of images like those to be served")
    parser.add_argument("--calibration-images", type=int, default=32, metavar="N", help="with --int8: calibrate on the first N images (default 32)")


def int8_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the --int8 flags given, or None."""
    if not args.int8 and args.calibration is not None:
        return "--calibration is for --int8"
    if args.int8 and (args.calibration is None or args.calibration_images < 1):
        return "--int8 needs --calibration DIR (images like those to be served) and --calibration-images >= 1"
    return None


def run_onnx(args: argparse.Namespace) -> int:
    """`onnx`: the standard, --fp16, --raw or --plugin graph, or with --int8 its quantized version."""
    from vfnet.model import CheckpointError, load_checkpoint
    from vfnet.server.zoo.resolve import checkpoint_file

    if args.max_detections is not None and args.max_detections < 1:
        return failed("--max-detections must be at least 1", 2)
    if args.int8 and (args.fp16 or args.raw or args.plugin):
        return failed("--int8 starts from the standard float32 graph: it cannot go with --fp16, --raw or --plugin", 2)
    if args.sampled_star and args.plugin:
        return failed("--sampled-star and --plugin write the star convolution two different ways: pick one", 2)
    if problem := int8_problem(args):
        return failed(problem, 2)
    try:
        model = load_checkpoint(checkpoint_file(args.weights, zoo_file=args.zoo, mirror=args.mirror, say=progress))
        if args.int8:
            from .int8 import calibration_images, export_int8

            images = calibration_images(args.calibration, args.calibration_images)
            summary = export_int8(model, args.out, calibration=images, sampled_star=args.sampled_star, max_detections=args.max_detections, progress=progress)
            print(f"{summary}; int8 convolutions calibrated on {len(images)} images from {args.calibration}")
            return 0
        from .onnx_export import export_onnx

        summary = export_onnx(
            model,
            args.out,
            fp16=args.fp16,
            fp16_storage=args.fp16_storage,
            raw=args.raw,
            plugin=args.plugin,
            sampled_star=args.sampled_star,
            max_detections=args.max_detections,
            progress=progress,
        )
    except (CheckpointError, ValueError) as exc:  # ValueError: e.g. --plugin for a model without star convolutions
        return failed(str(exc))
    print(summary)
    return 0


def run_openvino(args: argparse.Namespace) -> int:
    """`openvino`: needs OpenVINO beside torch (pip install 'vfnet-serve[export,openvino]')."""
    import importlib.util

    from vfnet.model import CheckpointError, load_checkpoint
    from vfnet.server.zoo.resolve import checkpoint_file

    if importlib.util.find_spec("openvino") is None:
        return failed("vfnet export openvino needs OpenVINO: pip install 'vfnet-serve[export,openvino]'")
    if args.max_detections is not None and args.max_detections < 1:
        return failed("--max-detections must be at least 1", 2)
    if args.out.exists() and not args.out.is_dir():
        return failed(f"--out {args.out} is a file; give a folder (model.xml and model.bin go in it)", 2)
    if problem := int8_problem(args):
        return failed(problem, 2)
    if args.int8 and importlib.util.find_spec("nncf") is None:
        return failed("vfnet export openvino --int8 needs NNCF: pip install 'vfnet-serve[export,openvino]'")
    from .openvino_export import export_openvino

    try:
        model = load_checkpoint(checkpoint_file(args.weights, zoo_file=args.zoo, mirror=args.mirror, say=progress))
        if args.int8:
            from .int8 import calibration_images
            from .openvino_int8 import export_openvino_int8

            images = calibration_images(args.calibration, args.calibration_images)
            summary = export_openvino_int8(
                model, args.out, calibration=images, sampled_star=args.sampled_star, max_detections=args.max_detections, progress=progress
            )
            print(f"{summary}; int8 through NNCF, calibrated on {len(images)} images from {args.calibration}")
            return 0
        print(export_openvino(model, args.out, sampled_star=args.sampled_star, max_detections=args.max_detections, progress=progress))
    except (CheckpointError, ValueError) as exc:  # ValueError: a ZooError (unknown name, failed download), no calibration images
        return failed(str(exc))
    return 0


def zoo_onnx(name: str, zoo_file: str | None, mirror: str | None) -> Path:
    """The cached ONNX export of the zoo model `name` (pulled and exported on first use)."""
    from vfnet.server.zoo.resolve import is_model_name, served_file

    if not is_model_name(name):
        raise ValueError(f"trt --weights takes a zoo model name, not a file ({name}); export a checkpoint with `vfnet export onnx` and pass --onnx")
    return served_file(name, "tensorrt", zoo_file=zoo_file, mirror=mirror, say=progress)


def run_trt(args: argparse.Namespace) -> int:
    """`trt`: no torch; TensorRT's absence, a missing GPU or a bad file is one line and exit 1."""
    from vfnet.server.runtime.artifact import ModelLoadError
    from vfnet.server.runtime.backends.tensorrt.build import BuilderSettings
    from vfnet.server.runtime.backends.tensorrt.cache import read_sidecar

    from .trt_export import chosen_profile, export_trt

    try:
        onnx = args.onnx or zoo_onnx(args.weights, args.zoo, args.mirror)
        engine = export_trt(
            onnx,
            args.out,
            profile_for=lambda card: chosen_profile(card, args),
            plugin_lib=args.plugin_lib,
            settings=BuilderSettings(int(args.workspace * (1 << 30)), args.builder_optimization_level, args.timing_cache, args.tf32),
            progress=progress,
        )
    except (ModelLoadError, ValueError) as exc:
        return failed(str(exc))
    card, built = read_sidecar(engine)
    shapes = built.profile.shapes()
    print(f"{engine}: {engine.stat().st_size / 1e6:.1f} MB built in {built.build_seconds:.0f} s, TensorRT {built.tensorrt_version} on "
          f"{built.gpu_name} ({built.compute_capability}), {'tf32' if built.tf32 and card.precision == 'fp32' else card.precision}, images {shapes['min']} .. {shapes['max']}; "
          f"manifest {engine.name}.json")  # fmt: skip
    return 0
