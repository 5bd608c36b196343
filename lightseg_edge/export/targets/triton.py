"""Triton Inference Server target: a ready model repository ``triton-<precision>/`` beside the other artifacts.

``lightseg-export --model ucmnet --formats onnx,triton`` writes::

    triton-fp32/                   (triton-fp16/, triton-int8/: the precision of the ONNX model in it)
      README.md                    how to serve it (tritonserver --model-repository=.../triton-fp32)
      <model>/config.pbtxt         the ensemble clients call: IMAGE (uint8 HxWx3 RGB) -> MASK (uint8 HxW), PROBABILITY
      <model>/1/README.txt         (an ensemble has no model file, but Triton needs its version folder)
      <model>_preprocess/          Python backend: resize + normalise exactly as ``data.transforms.preprocess``
      <model>_onnx/1/model.onnx    onnxruntime_onnx: a byte copy of the export's ONNX at the lowest requested precision
      <model>_postprocess/         Python backend: logits -> mask / probabilities at the image's own size, exactly as
                                   ``data.transforms.logits_to_mask`` / ``logits_to_proba`` (threshold 0.5)

One ONNX model, not one per precision: this is the layout Ultralytics' Triton guide builds (one exported ONNX in
``<name>/1/model.onnx`` with a hand-written config, FP16 through an optional TensorRT accelerator block), and the
precision follows the rest of the export: the lowest requested one (int8 before fp16 before fp32), the one the folder
is named after and the TensorRT engine is built from. Its ONNX is byte-identical to that variant, already scored on
the held-out images, so the repository itself is not scored again (``runnable`` says why; it needs tritonserver).

The Python-backend ``model.py`` is self-contained (numpy + OpenCV, no lightseg_edge: Triton's Python backend runs in
its own environment) and identical for every model; the preprocessing values live in each ``config.pbtxt``'s
``parameters``. Its maths are plain functions (``preprocess``, ``postprocess``) importable without
``triton_python_backend_utils``, so the tests run them against the project's predictors. OpenCV must be installed
where the Python backend runs (``pip install opencv-python-headless`` in the tritonserver container).

Every ``config.pbtxt`` is parsed into Triton's own ``ModelConfig`` protobuf (``tritonclient.grpc.model_config_pb2``)
and the ensemble's wiring (models, tensor names, types and dims) is checked before the export continues.

Manifest: one artifact ``triton-<precision>`` whose main file is the ensemble's ``config.pbtxt``; every other file of
the repository is a companion with its own sha256 (the manifest verifies files, and a folder only as a Core ML
``.mlpackage``). The folder is named after the precision, like ``openvino-fp16.xml``, because the manifest keys
artifacts by precision: an in-place ``--from-onnx`` run at another precision keeps the earlier ``triton-fp32`` entry
and its folder beside the new ``triton-fp16`` one; one shared ``triton/`` folder would be rewritten under the kept
entry and fail its sha256.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..._atomic import replaced, write_text_atomic
from ..._hashing import sha256_file
from ..._optional import require
from ...errors import ExportError, MissingDependencyError
from ...types import PreprocessConfig, Runtime
from . import BuiltArtifact, Target, TargetJob

FOLDER = "triton"
PRECISIONS = ("fp32", "fp16", "int8")
THRESHOLD = 0.5  # runtimes.base.DEFAULT_THRESHOLD: the probability a mask is cut at
DEFAULT_MAX_BATCH = 8  # max_batch_size of the ONNX model of a dynamic-batch export
QUEUE_DELAY_US = 100  # dynamic_batching's max_queue_delay_microseconds (Triton's own examples use 100)
KINDS = ("KIND_GPU", "KIND_CPU")
NOT_SCORED = ("a Triton repository is served by tritonserver (see its README.md), not run here; its ONNX model is "
              "byte-identical to the ONNX variant of that precision, scored above")
_STEP = "triton"
_ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}  # pipeline.FILE_NAMES
_TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
# ONNX TensorProto element type -> Triton data type
_ONNX_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
               7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64",
               16: "TYPE_BF16"}


def runnable() -> Optional[str]:
    return NOT_SCORED


# ------------------------------------------------------------------------------------------------- the build
def build(job: TargetJob) -> Tuple[BuiltArtifact, ...]:
    if job.preprocess is None:
        raise ExportError(_STEP, "the repository's preprocess model needs the export's preprocessing, which this ONNX does not "
                                 "record; pass --model NAME (or export the model with lightseg-export first)")
    precision = next(p for p in ("int8", "fp16", "fp32") if p in job.precisions or p == "fp32")
    source = _onnx_source(job, precision)
    name = model_name(job.model_name or _recorded_model(job.onnx_fp32) or job.onnx_fp32.stem)
    stage = Path(job.stage)
    folder = repository_folder(precision)
    work = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=str(stage)))
    try:
        files = write_repository(work, name, source, job.preprocess, precision)
        check_repository(work)
        final = stage / folder
        if final.exists():
            shutil.rmtree(final)
        os.rename(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rel = [f"{folder}/{f}" for f in files]
    main = f"{folder}/{name}/config.pbtxt"
    extra = {"repository": folder, "ensemble": name, "models": [name, f"{name}_preprocess", f"{name}_onnx", f"{name}_postprocess"],
             "onnx_source": source.name, "onnx_sha256": sha256_file(source), "platform": "onnxruntime_onnx",
             "instance_kind": "KIND_GPU", "threshold": THRESHOLD,
             "serve": f"tritonserver --model-repository=<export folder>/{folder} (Python backend needs numpy and opencv-python-headless)"}
    return (BuiltArtifact(key=f"triton-{precision}", path=main, precision=precision,
                          companions=tuple(f for f in rel if f != main), extra=extra),)


def repository_folder(precision: str) -> str:
    """``triton-<precision>``: one folder per precision, as the manifest keys them (see the module docstring)."""
    return f"{FOLDER}-{precision}"


def model_name(name: str) -> str:
    """A Triton model name from an export's model name: letters, digits, '_', '-' and '.' only."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "lightseg"
    return cleaned


def _recorded_model(path: Path) -> Optional[str]:
    """The ``lightseg.model`` an exported ONNX records in its metadata (a --from-onnx run has no --model)."""
    onnx = require("onnx", purpose="reading the ONNX metadata")
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get("lightseg.model") or None


def _onnx_source(job: TargetJob, precision: str) -> Path:
    """The ONNX variant at ``precision``: in the staging folder, or beside the FP32 file (an in-place --from-onnx)."""
    if precision == "fp32":
        return Path(job.onnx_fp32)
    for folder in (Path(job.stage), Path(job.onnx_fp32).parent):
        path = folder / _ONNX_FILES[precision]
        if path.is_file():
            return path
    raise ExportError(_STEP, f"no {_ONNX_FILES[precision]} in {job.stage} to put into the repository "
                             f"(the {precision} step runs before the targets)")


def write_repository(root: Path, name: str, onnx_path: Path, pre: PreprocessConfig, precision: str = "fp32",
                     kind: str = "KIND_GPU", tensorrt: bool = False, max_batch: int = DEFAULT_MAX_BATCH) -> List[str]:
    """Write the four models of the repository into ``root``; the written files, relative to ``root``, sorted.

    ``kind``: the ONNX model's instance group (KIND_GPU, or KIND_CPU for a CPU-only server). ``tensorrt``: enable the
    onnxruntime TensorRT accelerator block (written commented out otherwise) at ``precision``'s precision mode."""
    if kind not in KINDS:
        raise ExportError(_STEP, f"instance kind {kind!r}: expected one of {', '.join(KINDS)}")
    io = onnx_io(onnx_path)
    (in_name, in_type, in_dims), (out_name, out_type, out_dims) = io
    batching = in_dims[0] is None
    # what one request carries between the models: the network input and logits for one image, padded to a static batch
    net_dims = [1 if batching else in_dims[0]] + [_dim(d) for d in in_dims[1:]]
    logit_dims = [1 if batching else _dim(out_dims[0])] + [_dim(d) for d in out_dims[1:]]
    texts = {
        f"{name}/config.pbtxt": ensemble_config(name, in_name, out_name, in_type, out_type, net_dims, logit_dims, precision),
        f"{name}/1/README.txt": "An ensemble has no model file of its own; Triton needs this version folder to exist.\n",
        f"{name}_preprocess/config.pbtxt": preprocess_config(f"{name}_preprocess", pre, in_type, net_dims),
        f"{name}_preprocess/1/model.py": PREPROCESS_PY,
        f"{name}_onnx/config.pbtxt": onnx_config(f"{name}_onnx", io, kind, tensorrt, precision, max_batch),
        f"{name}_postprocess/config.pbtxt": postprocess_config(f"{name}_postprocess", out_type, logit_dims),
        f"{name}_postprocess/1/model.py": POSTPROCESS_PY,
        "README.md": readme(name, precision, pre),
    }
    for rel, text in texts.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("config.pbtxt"):
            parse_config(text, path)
        write_text_atomic(path, text)
    onnx_dst = root / f"{name}_onnx" / "1" / "model.onnx"
    onnx_dst.parent.mkdir(parents=True, exist_ok=True)
    with replaced(onnx_dst) as tmp:
        shutil.copyfile(onnx_path, tmp)
    return sorted(list(texts) + [f"{name}_onnx/1/model.onnx"])


def onnx_io(path: Path) -> Tuple[Tuple[str, str, List[Optional[int]]], Tuple[str, str, List[Optional[int]]]]:
    """((input name, Triton type, dims), (output name, Triton type, dims)) of a one-input, one-output ONNX graph;
    None for a symbolic dimension."""
    from ..onnx_export import graph_io

    onnx = require("onnx", purpose="reading the ONNX graph for the Triton config")
    in_name, in_dims, out_name, _ = graph_io(path)  # checks one input and one output
    graph = onnx.load(str(path), load_external_data=False).graph
    tensor_in = next(i for i in graph.input if i.name == in_name).type.tensor_type
    tensor_out = graph.output[0].type.tensor_type
    out_dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_out.shape.dim]
    types = []
    for what, tensor in (("input", tensor_in), ("output", tensor_out)):
        if tensor.elem_type not in _ONNX_TYPES:
            raise ExportError(_STEP, f"{path.name}: its {what} has ONNX element type {tensor.elem_type}, which Triton has no type for")
        types.append(_ONNX_TYPES[tensor.elem_type])
    if len(in_dims) != 4 or len(out_dims) != 4:
        raise ExportError(_STEP, f"{path.name}: expected NCHW input and output, got {len(in_dims)}-d and {len(out_dims)}-d")
    if any(d is None for d in list(in_dims[1:]) + list(out_dims[1:])):
        raise ExportError(_STEP, f"{path.name}: only the batch dimension may be dynamic for the Triton repository, got input "
                                 f"{list(in_dims)} and output {out_dims}")
    return (in_name, types[0], list(in_dims)), (out_name, types[1], out_dims)


def _dim(d: Optional[int]) -> int:
    return -1 if d is None else int(d)


def _dims(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(d)) for d in dims) + " ]"


def _param(key: str, value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'parameters {{ key: "{key}" value: {{ string_value: "{text}" }} }}'


# ------------------------------------------------------------------------------------------------- the configs
def onnx_config(name: str, io, kind: str = "KIND_GPU", tensorrt: bool = False, precision: str = "fp32",
                max_batch: int = DEFAULT_MAX_BATCH) -> str:
    (in_name, in_type, in_dims), (out_name, out_type, out_dims) = io
    batching = in_dims[0] is None
    if batching:
        head = f"max_batch_size: {int(max_batch)}"
        ins, outs = in_dims[1:], out_dims[1:]
        sched = f"dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}\n"
    else:  # a static batch: full dims, no batching by Triton
        head, ins, outs, sched = "max_batch_size: 0", in_dims, out_dims, ""
    accel = _tensorrt_block(precision)  # not "trt": the TensorRT API check reads that name as the module
    accel = accel if tensorrt else "# TensorRT through onnxruntime (builds an engine when the model loads; uncomment to use):\n" + \
        "".join(f"# {line}\n" for line in accel.splitlines())
    return (
        f'# The exported {precision} ONNX on onnxruntime; dims and types read from the ONNX graph.\n'
        f'name: "{name}"\n'
        f'platform: "onnxruntime_onnx"\n'
        f'{head}\n'
        f'input [ {{ name: "{in_name}" data_type: {in_type} dims: {_dims(map(_dim, ins))} }} ]\n'
        f'output [ {{ name: "{out_name}" data_type: {out_type} dims: {_dims(map(_dim, outs))} }} ]\n'
        f'{sched}'
        f'# KIND_GPU runs on every visible GPU; KIND_CPU runs on the CPU (a server without GPUs).\n'
        f'instance_group [ {{ count: 1 kind: {kind} }} ]\n'
        f'{accel}'
    )


def _tensorrt_block(precision: str) -> str:
    return (
        "optimization { execution_accelerators {\n"
        "  gpu_execution_accelerator : [ {\n"
        '    name : "tensorrt"\n'
        f'    parameters {{ key: "precision_mode" value: "{_TRT_PRECISION[precision]}" }}\n'
        '    parameters { key: "max_workspace_size_bytes" value: "1073741824" }\n'
        '    parameters { key: "trt_engine_cache_enable" value: "true" }\n'
        "  } ]\n"
        "} }\n"
    )


def preprocess_config(name: str, pre: PreprocessConfig, in_type: str, net_dims: Sequence[int]) -> str:
    h, w = pre.size
    params = [_param("height", h), _param("width", w), _param("mode", pre.mode),
              _param("mean", ",".join(repr(float(v)) for v in pre.mean)), _param("std", ",".join(repr(float(v)) for v in pre.std)),
              _param("batch", int(net_dims[0])), _param("FORCE_CPU_ONLY_INPUT_TENSORS", "yes")]
    return (
        "# RGB uint8 HxWx3 image of any size -> the network input, as lightseg_edge.data.transforms.preprocess does it.\n"
        f'name: "{name}"\n'
        'backend: "python"\n'
        "max_batch_size: 0\n"
        'input [ { name: "IMAGE" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] } ]\n'
        "output [\n"
        f'  {{ name: "INPUT" data_type: {in_type} dims: {_dims(net_dims)} }},\n'
        '  { name: "IMAGE_SIZE" data_type: TYPE_INT32 dims: [ 2 ] }\n'
        "]\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        + "\n".join(params) + "\n"
    )


def postprocess_config(name: str, out_type: str, logit_dims: Sequence[int]) -> str:
    return (
        "# Logits at network size -> mask and probabilities at the image's size (lightseg_edge.data.transforms).\n"
        f'name: "{name}"\n'
        'backend: "python"\n'
        "max_batch_size: 0\n"
        "input [\n"
        f'  {{ name: "LOGITS" data_type: {out_type} dims: {_dims(logit_dims)} }},\n'
        '  { name: "IMAGE_SIZE" data_type: TYPE_INT32 dims: [ 2 ] }\n'
        "]\n"
        "output [\n"
        '  { name: "MASK" data_type: TYPE_UINT8 dims: [ -1, -1 ] },\n'
        '  { name: "PROBABILITY" data_type: TYPE_FP32 dims: [ -1, -1 ] }\n'
        "]\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        f'{_param("threshold", repr(THRESHOLD))}\n'
        f'{_param("FORCE_CPU_ONLY_INPUT_TENSORS", "yes")}\n'
    )


def ensemble_config(name: str, in_name: str, out_name: str, in_type: str, out_type: str, net_dims: Sequence[int],
                    logit_dims: Sequence[int], precision: str) -> str:
    return (
        "# The model to call: IMAGE (RGB uint8 HxWx3, any size) -> MASK (uint8 {0,1} HxW) and PROBABILITY (float32 HxW).\n"
        f'name: "{name}"\n'
        'platform: "ensemble"\n'
        "max_batch_size: 0\n"
        'input [ { name: "IMAGE" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] } ]\n'
        "output [\n"
        '  { name: "MASK" data_type: TYPE_UINT8 dims: [ -1, -1 ] },\n'
        '  { name: "PROBABILITY" data_type: TYPE_FP32 dims: [ -1, -1 ] }\n'
        "]\n"
        "ensemble_scheduling { step [\n"
        f'  {{ model_name: "{name}_preprocess" model_version: -1\n'
        '    input_map { key: "IMAGE" value: "IMAGE" }\n'
        '    output_map { key: "INPUT" value: "network_input" }\n'
        '    output_map { key: "IMAGE_SIZE" value: "image_size" } },\n'
        f'  {{ model_name: "{name}_onnx" model_version: -1\n'
        f'    input_map {{ key: "{in_name}" value: "network_input" }}\n'
        f'    output_map {{ key: "{out_name}" value: "logits" }} }},\n'
        f'  {{ model_name: "{name}_postprocess" model_version: -1\n'
        '    input_map { key: "LOGITS" value: "logits" }\n'
        '    input_map { key: "IMAGE_SIZE" value: "image_size" }\n'
        '    output_map { key: "MASK" value: "MASK" }\n'
        '    output_map { key: "PROBABILITY" value: "PROBABILITY" } }\n'
        "] }\n"
        f'{_param("lightseg.precision", precision)}\n'
        f'{_param("lightseg.threshold", repr(THRESHOLD))}\n'
    )


def readme(name: str, precision: str, pre: PreprocessConfig) -> str:
    return f"""# Triton model repository for `{name}` ({precision}), written by lightseg-export

Call the ensemble `{name}`: input `IMAGE` (RGB uint8, H x W x 3, any size), outputs `MASK` (uint8 0/1, H x W, at the
image's own size) and `PROBABILITY` (float32, H x W). The image is resized to {pre.size[0]}x{pre.size[1]} and
normalised (`{pre.mode}`) by `{name}_preprocess`, run by `{name}_onnx` (ONNX Runtime, {precision}) and cut at probability
{THRESHOLD:g} by `{name}_postprocess`: the same masks as `lightseg_edge.runtimes.load_predictor(<export folder>).predict(image)`.

Serve it (the Python backend models need numpy and OpenCV):

    docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -v "$PWD/{repository_folder(precision)}:/models" \\
        nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
        bash -c "pip install opencv-python-headless && tritonserver --model-repository=/models"

On a server without a GPU, set `kind: KIND_CPU` in `{name}_onnx/config.pbtxt`. For TensorRT through ONNX Runtime,
uncomment the `optimization` block there (the engine is built when the model loads).

Query it with `tritonclient` (`pip install "tritonclient[grpc]"`):

    import numpy as np, tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient("localhost:8001")
    inp = grpcclient.InferInput("IMAGE", list(image.shape), "UINT8"); inp.set_data_from_numpy(image)
    mask = client.infer("{name}", [inp]).as_numpy("MASK")
"""


# ------------------------------------------------------------------------------------------------- validation
def model_config_pb2() -> Any:
    """Triton's ``ModelConfig`` protobuf module (tritonclient[grpc])."""
    try:
        return require("tritonclient.grpc.model_config_pb2", extra="triton", purpose="checking the Triton model configs")
    except RuntimeError as exc:  # tritonclient without grpcio raises RuntimeError from tritonclient.grpc
        raise MissingDependencyError(f"tritonclient is installed without grpc support ({exc}); install it with: "
                                     f"pip install 'lightseg-edge[triton]'") from exc


def parse_config(text: str, where: Path) -> Any:
    """``text`` parsed into Triton's ModelConfig; ExportError naming the file when it does not parse."""
    pb = model_config_pb2()
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as exc:
        raise ExportError(_STEP, f"{where}: not a valid Triton model config: {exc}") from exc


def read_configs(root: Path) -> Dict[str, Any]:
    """Model folder name -> its parsed ModelConfig, for every model folder of the repository ``root``."""
    out = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        cfg = folder / "config.pbtxt"
        if not cfg.is_file():
            raise ExportError(_STEP, f"{folder}: a model folder without config.pbtxt")
        out[folder.name] = parse_config(cfg.read_text(encoding="utf-8"), cfg)
    return out


def check_repository(root: Path) -> Dict[str, Any]:
    """Check what Triton checks when it loads the repository: each config's name is its folder's, each model has its
    version folder (and model file), and every ensemble step names a model of the repository with inputs and outputs
    it has, each tensor produced before it is consumed, with one type and compatible dims. Returns the configs."""
    configs = read_configs(root)

    def fail(msg: str) -> None:
        raise ExportError(_STEP, f"{root}: {msg}")

    for name, cfg in configs.items():
        if cfg.name and cfg.name != name:
            fail(f"model folder {name!r} holds a config named {cfg.name!r}")
        if not (Path(root) / name / "1").is_dir():
            fail(f"model {name!r} has no version folder 1/")
        needed = {"onnxruntime_onnx": "model.onnx"}.get(cfg.platform) or ("model.py" if cfg.backend == "python" else None)
        if needed and not (Path(root) / name / "1" / needed).is_file():
            fail(f"model {name!r} has no 1/{needed}")
    for name, cfg in configs.items():
        if cfg.platform != "ensemble":
            continue
        known = {t.name: (t.data_type, _full(0, t.dims), list(t.dims)) for t in cfg.input}  # ensemble tensor -> (type, dims)
        for step in cfg.ensemble_scheduling.step:
            sub = configs.get(step.model_name)
            if sub is None:
                fail(f"ensemble {name!r} calls {step.model_name!r}, which is not in the repository")
            inputs = {t.name: t for t in sub.input}
            outputs = {t.name: t for t in sub.output}
            for key, tensor in step.input_map.items():
                if key not in inputs:
                    fail(f"ensemble {name!r}: {step.model_name!r} has no input {key!r}")
                if tensor not in known:
                    fail(f"ensemble {name!r}: tensor {tensor!r} is consumed by {step.model_name!r} before anything produces it")
                _check_tensor(fail, name, tensor, known[tensor], inputs[key], sub.max_batch_size)
            if set(inputs) - set(step.input_map):
                fail(f"ensemble {name!r}: {step.model_name!r} inputs {sorted(set(inputs) - set(step.input_map))} are not mapped")
            for key, tensor in step.output_map.items():
                if key not in outputs:
                    fail(f"ensemble {name!r}: {step.model_name!r} has no output {key!r}")
                if tensor in known:
                    fail(f"ensemble {name!r}: tensor {tensor!r} is produced twice")
                out = outputs[key]
                known[tensor] = (out.data_type, _full(sub.max_batch_size, out.dims), list(out.dims))
        for out in cfg.output:
            if out.name not in known:
                fail(f"ensemble {name!r}: output {out.name!r} is produced by no step")
            _check_tensor(fail, name, out.name, known[out.name], out, 0)
    return configs


def _full(max_batch: int, dims: Sequence[int]) -> List[int]:
    return ([-1] if max_batch > 0 else []) + list(dims)


def _compatible(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


def _check_tensor(fail, ensemble: str, tensor: str, have: Tuple[int, List[int], List[int]], spec: Any, max_batch: int) -> None:
    """Triton's rule: one data type, and dims that match (-1 a wildcard) either as written or with the batch dimension
    of a batching model (a non-batching [-1 or 1, C, H, W] feeds a batching model's [C, H, W])."""
    dtype, full, dims = have
    if dtype != spec.data_type:
        fail(f"ensemble {ensemble!r}: tensor {tensor!r} changes type between models")
    if not (_compatible(dims, list(spec.dims)) or _compatible(full, _full(max_batch, spec.dims))):
        fail(f"ensemble {ensemble!r}: tensor {tensor!r} has dims {full} where {spec.name!r} takes {_full(max_batch, spec.dims)}")


# ------------------------------------------------------------------------------------------------- model.py sources
_COMMON_PY = '''
import json

import numpy as np


def _parameters(args):
    """The string parameters of this model's config.pbtxt."""
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def _error(pb_utils, exc):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
'''

PREPROCESS_PY = '''"""Triton Python backend: RGB uint8 HxWx3 image -> normalised NCHW network input (written by lightseg-export).

Self-contained (numpy + OpenCV): the same operations, in the same order and precision, as
lightseg_edge.data.transforms.preprocess, so the network sees exactly what lightseg_edge's predictors give it. The
values (size, mode, mean, std, batch) come from this model's config.pbtxt parameters.
"""
''' + _COMMON_PY + '''

def config_from(params):
    """The preprocessing settings from the config.pbtxt string parameters."""
    return {"size": (int(params["height"]), int(params["width"])), "mode": params["mode"],
            "mean": tuple(float(v) for v in params["mean"].split(",")), "std": tuple(float(v) for v in params["std"].split(",")),
            "batch": int(params.get("batch", "1"))}


def check_image(image):
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"IMAGE: expected HxWx3 uint8 RGB, got shape {getattr(image, 'shape', None)}")
    if image.dtype != np.uint8:
        raise ValueError(f"IMAGE: expected dtype uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"IMAGE: empty image of shape {image.shape}")
    return image


def levels(mode, mean, std, lo=0.0, hi=255.0):
    """3x256 float32: what each uint8 level of each channel normalises to, by the same float32 operations."""
    x = np.broadcast_to(np.arange(256, dtype=np.float32), (3, 256)).copy()
    if mode == "minmax":
        return (x - np.float32(lo)) / np.float32(hi - lo) if hi > lo else np.zeros_like(x)
    if mode == "scale":
        return x / 255.0
    if mode == "meanstd":
        return (x / 255.0 - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]
    return x


def normalize(image, mode, mean, std):
    """HxWx3 uint8 (at network size) -> 3xHxW float32: a lookup table per channel."""
    import cv2

    lo, hi = (float(image.min()), float(image.max())) if mode == "minmax" else (0.0, 255.0)
    table = np.ascontiguousarray(levels(mode, mean, std, lo, hi).T.reshape(1, 256, 3))
    return np.ascontiguousarray(cv2.LUT(np.ascontiguousarray(image), table).transpose(2, 0, 1))


def resize_image(image, size):
    import cv2

    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def preprocess(image, cfg):
    """One RGB uint8 image -> (batch x 3 x H x W float32 network input, int32 [height, width] of the image).

    A static batch above 1 repeats the image (the postprocess model reads the first result)."""
    x = normalize(resize_image(check_image(image), cfg["size"]), cfg["mode"], cfg["mean"], cfg["std"])
    batch = np.repeat(x[None], cfg["batch"], axis=0)  # an array of its own: Triton copies out whole buffers, not views
    return batch, np.array(image.shape[:2], dtype=np.int32)


class TritonPythonModel:
    def initialize(self, args):
        import cv2  # noqa: F401  (fails the model load, not the first request, when OpenCV is missing)

        self.cfg = config_from(_parameters(args))

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                image = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
                x, size = preprocess(image, self.cfg)
                outputs = [pb_utils.Tensor("INPUT", x), pb_utils.Tensor("IMAGE_SIZE", size)]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as exc:  # one bad image fails its request, not the batch
                responses.append(_error(pb_utils, exc))
        return responses
'''

POSTPROCESS_PY = '''"""Triton Python backend: logits at network size -> mask and probabilities at the image's size (written by
lightseg-export).

Self-contained (numpy + OpenCV): the same operations as lightseg_edge.data.transforms.logits_to_mask and
logits_to_proba (logits resized bilinearly to the image size, then the sigmoid; the mask cut at the threshold of this
model's config.pbtxt parameters), so the masks equal lightseg_edge's predictors' bit for bit.
"""
''' + _COMMON_PY + '''

def sigmoid(x):
    out = np.empty_like(x, dtype=np.float32)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _resized(logits, out_size):
    import cv2

    lg = np.asarray(logits, dtype=np.float32)
    lg = lg.reshape(lg.shape[-2:])
    h, w = out_size
    if lg.shape != (h, w):
        lg = cv2.resize(lg, (w, h), interpolation=cv2.INTER_LINEAR)
    return lg


def _cut(lg, threshold):
    """The mask sigmoid(lg) >= threshold, bit for bit, comparing the resized logits with logit(threshold) and using
    the sigmoid only in a small band around it."""
    if not 0.0 < threshold < 1.0:
        return (sigmoid(lg) >= threshold).astype(np.uint8)
    cut = float(np.log(threshold) - np.log1p(-threshold))
    # 16 float32 steps of the probability at the threshold, as logits, plus 4 steps of the logit (logit_band)
    band = 16 * float(np.spacing(np.float32(threshold))) / (threshold * (1.0 - threshold)) + 4 * float(np.spacing(np.float32(abs(cut))))
    mask = (lg >= cut).astype(np.uint8)
    near = np.abs(lg - np.float32(cut)) <= band
    if near.any():
        mask[near] = sigmoid(lg[near]) >= threshold
    return mask


def postprocess(logits, image_size, threshold=0.5, probability=True):
    """(N x 1 x h x w logits, [height, width]) -> (HxW uint8 mask, HxW float32 probabilities or None); the first
    result of a padded static batch. The logits are resized once; with probabilities the mask is cut from them."""
    lg = _resized(np.asarray(logits)[0], (int(image_size[0]), int(image_size[1])))
    if not probability:
        return _cut(lg, threshold), None
    proba = sigmoid(lg)
    return (proba >= threshold).astype(np.uint8), proba


class TritonPythonModel:
    def initialize(self, args):
        import cv2  # noqa: F401

        self.threshold = float(_parameters(args).get("threshold", "0.5"))

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                logits = pb_utils.get_input_tensor_by_name(request, "LOGITS").as_numpy()
                size = pb_utils.get_input_tensor_by_name(request, "IMAGE_SIZE").as_numpy()
                wanted = request.requested_output_names() if hasattr(request, "requested_output_names") else None
                proba = wanted is None or not wanted or "PROBABILITY" in wanted
                mask, prob = postprocess(logits, size, self.threshold, proba)
                outputs = [pb_utils.Tensor("MASK", mask)]
                if prob is not None:
                    outputs.append(pb_utils.Tensor("PROBABILITY", prob))
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as exc:
                responses.append(_error(pb_utils, exc))
        return responses
'''


TARGET = Target(name="triton", runtime=Runtime.ONNXRUNTIME, precisions=PRECISIONS, needs_torch_model=False, runnable=runnable,
                build=build, static_batch=False)
