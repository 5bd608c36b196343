"""lightseg-export: a zoo model (or an ONNX file) -> checked FP32/FP16/INT8 ONNX and, where TensorRT and a GPU are
present, a TensorRT engine; with --formats, also OpenVINO IR, LiteRT (.tflite) and Core ML (.mlpackage); plus
manifest.json. Prints the step table and the accuracy of each artifact on held-out images.

Without TensorRT (a CPU machine, CI, a laptop) every ONNX file is still produced and the command prints how to build
the engine on the target: lightseg-export --from-onnx <out>/model.onnx --fp16 (exit code 0).
"""

from __future__ import annotations

import argparse
import logging
from typing import List, Optional

from ._common import batch_size, choice_list, img_size, positive_int, run_cli, setup_logging


def _parser() -> argparse.ArgumentParser:
    from ..export.config import CALIB_METHODS, DEFAULT_CALIB_IMAGES, DEFAULT_WORKSPACE_MB, INT8_METHODS, MAX_OPSET, MIN_OPSET, SIMPLIFIERS
    from ..export.keep import DEFAULT_MAX_DICE_DROP, DEFAULT_MIN_AGREEMENT
    from ..export.targets import FORMATS

    p = argparse.ArgumentParser(prog="lightseg-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registry name (see lightseg_edge.list_models())")
    p.add_argument(
        "--weights",
        metavar="CKPT",
        help="weights file (.safetensors or a lightseg-train checkpoint); default: the shipped pretrained weights; "
        "'random' exports random weights (testing only, recorded in the manifest)",
    )
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (FP16 graph, FP32 I/O) and build an FP16 engine")
    p.add_argument(
        "--int8", action="store_true", help="also write model.int8.onnx (Q/DQ, calibrated on --calib-data) and build an INT8 engine"
    )
    p.add_argument(
        "--calib-data", metavar="DIR", help="INT8 calibration images: a dataset root (its training split is used) or a folder of images"
    )
    p.add_argument("--calib-images", type=positive_int, metavar="N", help=f"number of calibration images (default {DEFAULT_CALIB_IMAGES})")
    p.add_argument("--calib-method", choices=CALIB_METHODS, help="how INT8 activation ranges are taken from the calibration images "
                   "(default minmax; ModelOpt has no percentile)")
    p.add_argument("--int8-method", choices=INT8_METHODS, help="INT8 Q/DQ quantizer: ort (ONNX Runtime quantize_static, default) or "
                   "modelopt (NVIDIA ModelOpt, pip install 'lightseg-edge[modelopt]')")
    p.add_argument("--int8-keep", metavar="auto|none|N|NAMES", help="layers the INT8 models keep in higher precision: auto (default: the "
                   "fewest, costliest first, that bring the model within --max-dice-drop and --min-agreement of FP32), none, the N "
                   "costliest, or comma-separated layer names")
    p.add_argument("--fp16-keep", metavar="auto|none|N|NAMES", help="the same for the FP16 ONNX (default none: only the overflow check's "
                   "choice)")
    p.add_argument("--max-dice-drop", type=float, metavar="X", help=f"keep 'auto' gate: mDice below FP32 by at most X on held-out "
                   f"images (default {DEFAULT_MAX_DICE_DROP})")
    p.add_argument("--min-agreement", type=float, metavar="X", help=f"keep 'auto' gate: mask Dice against the FP32 masks of at least X "
                   f"(default {DEFAULT_MIN_AGREEMENT})")
    p.add_argument(
        "--img-size", type=img_size, metavar="N", help="square input size, a multiple of the model's stride (default: the model's, 256)"
    )
    # defaults of None: a flag the user gave can be told from one left alone, and refused where it has no effect
    p.add_argument("--opset", type=positive_int, help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {MIN_OPSET})")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=batch_size, default=1, metavar="N", help="static batch size (default 1)")
    batch.add_argument("--dynamic-batch", metavar="MIN,OPT,MAX", help="dynamic batch with this TensorRT optimization profile, e.g. 1,8,32")
    p.add_argument(
        "--simplifier", choices=SIMPLIFIERS, help="graph simplifier; onnxsim falls back to onnxslim (default onnxsim)"
    )
    p.add_argument(
        "--formats", metavar="LIST", type=choice_list(FORMATS),
        help=f"comma-separated formats to produce, of {', '.join(FORMATS)} (default: onnx,tensorrt; the FP32 ONNX is always made, "
        f"as every other format starts from it; tensorrt is built only where TensorRT and a GPU are present)",
    )
    p.add_argument("--embed-preprocess", action="store_true", help="also write each ONNX with the preprocessing and the sigmoid/"
                   "threshold inside the graph (uint8 NHWC image in, mask out: model[.<precision>].embedded.onnx), for "
                   "DeepStream's nvinfer and mobile apps; the same as adding 'embedded' to --formats")
    p.add_argument("--no-cpu-default", dest="cpu_default", action="store_false",
                   help="do not time the CPU artifacts at the end; by default the fastest one with FP32's accuracy (and its "
                   "thread count) is recorded as the folder's CPU default, which load_predictor runs on a CPU")
    p.add_argument(
        "--from-onnx", metavar="FILE", help="start from an exported model.onnx (e.g. on the target device, to build the engine there)"
    )
    p.add_argument(
        "--workspace",
        type=positive_int,
        default=DEFAULT_WORKSPACE_MB,
        metavar="MB",
        help=f"TensorRT workspace limit in MiB (default {DEFAULT_WORKSPACE_MB})",
    )
    p.add_argument(
        "--output",
        metavar="DIR",
        help="output folder (default exports/<model>-<size>-<precisions>; with --from-onnx, the ONNX file's folder)",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="dataset root whose 'val' split is used for the parity and accuracy checks (default: $LIGHTSEG_ISIC2018, else "
        "--calib-data when it is a dataset root with a 'val' split, else ./data/isic2018, else the 8-image sample in "
        "tests/assets/isic_sample)",
    )
    return p


def _config(args: argparse.Namespace):
    from ..errors import ExportConfigError
    from ..export.config import DEFAULT_CALIB_IMAGES, MIN_OPSET, ExportConfig, parse_dynamic_batch
    from ..export.targets import DEFAULT_FORMATS

    for flag, value, needs in (("--calib-images", args.calib_images, args.int8), ("--calib-method", args.calib_method, args.int8),
                               ("--int8-method", args.int8_method, args.int8), ("--int8-keep", args.int8_keep, args.int8),
                               ("--fp16-keep", args.fp16_keep, args.fp16)):
        if value is not None and not needs:
            wanted = "--fp16" if flag == "--fp16-keep" else "--int8"
            raise ExportConfigError(f"{flag} is only used for {wanted[2:].upper()}; did you mean to add {wanted}?")
    formats = args.formats
    if args.embed_preprocess:
        formats = tuple(dict.fromkeys((formats or DEFAULT_FORMATS) + ("embedded",)))
    optional = {k: v for k, v in (("calib_method", args.calib_method), ("int8_method", args.int8_method), ("int8_keep", args.int8_keep),
                                  ("fp16_keep", args.fp16_keep), ("max_dice_drop", args.max_dice_drop),
                                  ("min_agreement", args.min_agreement), ("formats", formats)) if v is not None}
    if args.from_onnx is not None:
        for flag, value in (("--opset", args.opset), ("--simplifier", args.simplifier)):
            if value is not None:
                raise ExportConfigError(f"{flag} {value} has no effect with --from-onnx {args.from_onnx} (the ONNX file is used as it is)")
    return ExportConfig(
        model=args.model,
        weights=args.weights,
        fp16=args.fp16,
        int8=args.int8,
        calib_data=args.calib_data,
        calib_images=DEFAULT_CALIB_IMAGES if args.calib_images is None else args.calib_images,
        img_size=args.img_size,
        opset=MIN_OPSET if args.opset is None else args.opset,
        batch=args.batch,
        dynamic_batch=parse_dynamic_batch(args.dynamic_batch) if args.dynamic_batch is not None else None,
        simplifier=args.simplifier or "onnxsim",
        from_onnx=args.from_onnx,
        workspace_mb=args.workspace,
        output=args.output,
        data=args.data,
        cpu_default=args.cpu_default,
        **optional,
    )


def _run(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    setup_logging(False)
    # Step progress from this package at INFO; other libraries' INFO chatter (ORT quantization prints one line per
    # copied bias) stays out.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("lightseg_edge").setLevel(logging.INFO)
    from ..export.accuracy import format_accuracy
    from ..export.pipeline import export
    from ..export.steps import format_table

    result = export(_config(args))
    print()
    print(format_table(result.steps))
    if result.accuracy:
        first = next(iter(result.accuracy.values()))
        print(f"\naccuracy on {first.images} held-out images (mDice, Dice*, change vs the fp32 ONNX, mask agreement with it), "
              f"each artifact on its own runtime's CPU predictor:")
        print(format_accuracy(result.accuracy))
        if args.weights == "random":
            print("(random weights: these accuracy figures say nothing about a trained model)")
    if result.parity is not None:
        print(f"\nparity: {result.parity.summary()}")
    print(f"\noutput: {result.output}/ ({', '.join(sorted(p.name for p in result.artifacts.values()))}, manifest.json)")
    if result.engine is not None:
        print(f"engine: {result.engine}")
    elif result.target_command:
        print(f"engine: not built here ({result.engine_skipped}).")
        print(f"Build it on the target (Jetson / GPU machine) from this folder with:\n  {result.target_command}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
