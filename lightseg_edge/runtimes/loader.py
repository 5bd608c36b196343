"""``load_predictor``: one entry point from whatever the user has to a ready predictor.

Sources, and the runtime ``runtime="auto"`` picks for each:

======================================  ===================================================================
source                                  auto runtime
======================================  ===================================================================
export folder (``manifest.json``)       tensorrt if the folder has an engine, TensorRT and a CUDA binding are
                                        installed and the device is not ``cpu``; else, without ``precision``,
                                        the export's measured CPU default (``cpu_default``: the artifact and
                                        thread count that ran fastest with FP32's accuracy where it was
                                        exported) if its runtime is installed; else onnxruntime on the
                                        artifact ``precision`` selects (by default the export's headline
                                        precision, the lowest it holds: what its folder is named after)
``.onnx`` file                          onnxruntime (preprocessing from the manifest beside it, or the
                                        ``preprocess=`` option)
``.plan`` / ``.engine`` file            tensorrt (preprocessing from the manifest beside it, or
                                        ``preprocess=``; input spec from the engine itself)
trainer checkpoint (``.pt/.pth/.ckpt``)  pytorch (model name and preprocessing from the checkpoint, or
                                        ``model=``)
``.safetensors``                        pytorch (``model=NAME``, or a ``model`` entry in the file's metadata)
registry model name                     pytorch with its shipped weights
a zoo model object (``nn.Module``)      pytorch
======================================  ===================================================================

OpenVINO ``.xml``, LiteRT ``.tflite`` and Core ML ``.mlpackage`` files run on their runtime of the registry
(``runtimes.registry``, which names every runtime, alias, suffix and option); from an export folder, ``runtime=``
picks that runtime's artifact at ``precision`` (``openvino-fp16``, ``tflite-int8``, ...).

Options (keyword arguments): ``precision`` ('fp32' | 'fp16' | 'int8'), ``threshold``, ``tta`` ('none' | 'flips':
the logits averaged over four flipped views, four runs per batch; ``types.TTA``), ``preprocess``
(PreprocessConfig or its dict), ``input_spec`` (InputSpec or dict), ``model`` (registry name), ``verify`` (check
artifact sha256 against the manifest, default True; False skips only the hashing of big artifacts, never the rule
that every file a manifest names lies inside its folder); onnxruntime: ``providers``, ``threads``,
``graph_optimization_level`` ('disable' | 'basic' | 'extended' | 'all'), ``cache_dir`` (TensorRT EP caches);
pytorch: ``cuda_graph``, ``threads`` (process-wide in torch); tensorrt: ``buffers`` ('auto' | 'torch' |
'cuda-python' | 'pycuda'), ``cuda_graph``, ``allow_host_code``; openvino: ``threads``, ``inference_precision``
('f32' | 'bf16'), ``ov_device``, ``cache_dir``; litert: ``threads``; coreml: ``compute_units``.

An export folder is trusted only as far as its manifest vouches: every artifact, and the weights file the pytorch
runtime rebuilds the model from, must lie inside the folder (symlinks resolved) and match its recorded sha256
(``lightseg_edge.manifest.check_manifest`` / ``weights_file``); anything else is a one-line ManifestError.

Only the PyTorch paths import torch: an export folder, ``.onnx`` or ``.plan`` source never does (for ``.plan``, given
cuda-python or pycuda; see ``tensorrt_backend``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from .._hashing import brief_repr, check_sha256, is_artifact, sha256_file, shown
from ..data.tta import check_tta
from ..errors import CheckpointError, InvalidInputError
from ..manifest import (MANIFEST_NAME, Artifact, DeployManifest, ManifestError, find_manifest_for, read_deploy_manifest,
                        verify_artifact, weights_file)
from ..types import InputSpec, Precision, PreprocessConfig, Runtime
from .base import BasePredictor
from .registry import (RUNTIMES, RuntimeSpec, artifact_key, check_options, get_runtime, known_suffixes, runtime_for_artifact,
                       runtime_for_suffix)

PYTORCH = RUNTIMES[Runtime.PYTORCH]
ONNXRUNTIME = RUNTIMES[Runtime.ONNXRUNTIME]
TENSORRT = RUNTIMES[Runtime.TENSORRT]
SAFETENSORS_SUFFIX = ".safetensors"

Source = Union[str, "os.PathLike[str]", Any]


def _runtime(runtime: Union[str, Runtime]) -> Optional[RuntimeSpec]:
    """The registry row for ``runtime``; None for 'auto'."""
    if isinstance(runtime, str) and runtime.lower() == "auto":
        return None
    return get_runtime(runtime)


def _preprocess_option(value: Any) -> Optional[PreprocessConfig]:
    if value is None or isinstance(value, PreprocessConfig):
        return value
    if isinstance(value, dict):
        try:
            return PreprocessConfig.from_dict(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"preprocess={value!r}: expected PreprocessConfig.to_dict() keys size, mode, mean, std ({exc})") from exc
    raise InvalidInputError(f"preprocess: expected a PreprocessConfig or dict, got {type(value).__name__}")


def _input_spec_option(value: Any) -> Optional[InputSpec]:
    if value is None or isinstance(value, InputSpec):
        return value
    if isinstance(value, dict):
        try:
            return InputSpec.from_dict(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"input_spec={value!r}: expected InputSpec.to_dict() keys name, shape ({exc})") from exc
    raise InvalidInputError(f"input_spec: expected an InputSpec or dict, got {type(value).__name__}")


def _check_model_option(man: DeployManifest, options: Dict[str, Any]) -> None:
    """``model=`` (``--model``) is for files that do not record their model; an export does, and a different name is
    a mix-up (another model's folder?), not something to ignore."""
    model = options.get("model")
    if model is not None and model != man.model:
        raise InvalidInputError(f"model={brief_repr(model, 80)} contradicts {man.path}, which records model {man.model!r}; "
                                f"leave model= (--model) out for an export")


def _precision(value: Any, default: Optional[str] = None) -> Optional[Precision]:
    if value is None:
        return Precision(default) if default else None
    try:
        return Precision(value.value if isinstance(value, Precision) else str(value).lower())
    except ValueError as exc:
        raise InvalidInputError(f"precision {value!r}: expected one of fp32, fp16, int8") from exc


def _registry_preprocess(model: str) -> PreprocessConfig:
    from ..models import get_model_config  # imports torch: only reached when the user names a model

    return get_model_config(model).preprocess


def _resolve_preprocess(path: Path, manifest_pre: Optional[PreprocessConfig], options: Dict[str, Any]) -> PreprocessConfig:
    explicit = _preprocess_option(options.get("preprocess"))
    if explicit is not None:
        return explicit
    if manifest_pre is not None:
        return manifest_pre
    if options.get("model"):
        return _registry_preprocess(options["model"])
    raise InvalidInputError(
        f"{path}: no {MANIFEST_NAME} beside this file lists it, so its preprocessing is unknown; pass "
        f"preprocess=PreprocessConfig(size=(H, W), mode=...) (or a dict), or model=NAME to use the registry's, "
        f"or load the export folder instead"
    )


# ---------------------------------------------------------------------------------------------------------------------
# builders per runtime
# ---------------------------------------------------------------------------------------------------------------------
# The common options every predictor class takes as constructor keywords, beside its runtime's own.
_PREDICTOR_KEYWORDS = frozenset({"threshold", "tta"})


def _predictor_kwargs(spec: RuntimeSpec, options: Dict[str, Any]) -> Dict[str, Any]:
    return {k: options[k] for k in spec.options | _PREDICTOR_KEYWORDS if k in options}


def _file_predictor(spec: RuntimeSpec, path: Path, pre: PreprocessConfig, input_spec: Optional[InputSpec], device: Optional[str],
                    precision: Precision, options: Dict[str, Any], **extra: Any) -> BasePredictor:
    """A predictor of any file runtime: its class takes (path, preprocess, input_spec, device, precision, threshold, tta and
    its own options from the registry row)."""
    kw = _predictor_kwargs(spec, options)
    return spec.predictor_class()(path, pre, input_spec=input_spec, device=device, precision=precision, **kw, **extra)


def _torch_model(model: Any, pre: Optional[PreprocessConfig], device: Optional[str], options: Dict[str, Any], source: str) -> BasePredictor:
    prec = _precision(options.get("precision"), "fp32")
    kw = _predictor_kwargs(PYTORCH, options)
    return PYTORCH.predictor_class()(model, preprocess=pre, device=device, precision=prec.value, source=source, **kw)


def _from_checkpoint(path: Path, device: Optional[str], options: Dict[str, Any]) -> BasePredictor:
    """A trainer checkpoint (model name + preprocessing inside) or a bare state dict (needs ``model=``)."""
    from .._optional import require

    require("torch", purpose="loading a PyTorch checkpoint")
    from ..models._weights import load_torch_file

    obj = load_torch_file(path, "checkpoint")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a trainer checkpoint or a state dict, got {type(obj).__name__}")
    config = obj.get("config") if isinstance(obj.get("config"), dict) else {}
    name = options.get("model") or config.get("model")
    if not name:
        raise CheckpointError(f"{path}: this file does not record its model (no 'config' entry); pass model=NAME (see lightseg_edge.list_models())")
    pre = _preprocess_option(options.get("preprocess"))
    if pre is None and isinstance(obj.get("preprocess"), dict):
        try:
            pre = PreprocessConfig.from_dict(obj["preprocess"])
        except (KeyError, TypeError, ValueError) as exc:  # the file's record, not the user's option: name the file
            raise CheckpointError(f"{shown(path)}: its 'preprocess' record is invalid ({exc}); pass preprocess=PreprocessConfig(...)") from None
    return _torch_model(_model_from(name, path), pre, device, options, source=str(path))


def _model_from(name: Any, path: Path) -> Any:
    """The zoo model ``name`` with the weights in ``path``; an unknown name (often one the file records) names the file."""
    from ..errors import UnknownModelError
    from ..models import create_model

    try:
        return create_model(name, checkpoint=path)
    except UnknownModelError as exc:
        raise UnknownModelError(f"{shown(path)}: {exc}") from None


def _from_safetensors(path: Path, device: Optional[str], options: Dict[str, Any]) -> BasePredictor:
    from .._optional import require

    require("safetensors", purpose="reading .safetensors weights")
    from safetensors import safe_open

    name = options.get("model")
    if not name:
        try:
            with safe_open(str(path), framework="numpy") as f:
                name = (f.metadata() or {}).get("model")
        except Exception as exc:  # a damaged header, whichever error the library raises
            raise CheckpointError(f"{path}: cannot read safetensors header ({type(exc).__name__}: {exc})") from exc
    if not name:
        raise CheckpointError(f"{path}: safetensors weights do not name their model; pass model=NAME (see lightseg_edge.list_models())")
    return _torch_model(_model_from(name, path), _preprocess_option(options.get("preprocess")), device, options, source=str(path))


def _from_registry(name: str, device: Optional[str], options: Dict[str, Any]) -> BasePredictor:
    from ..models import create_model

    model = create_model(name, pretrained=True)
    return _torch_model(model, _preprocess_option(options.get("preprocess")), device, options, source=name)


def _pick_folder_runtime(man: DeployManifest, device: Optional[str], precision: Optional[Precision]) -> RuntimeSpec:
    eng = man.artifacts.get("engine")
    wants_engine = precision is None or eng is None or eng.precision is None or eng.precision == precision.value
    if eng is not None and wants_engine and TENSORRT.unusable_reason(device) is None:
        return TENSORRT
    return ONNXRUNTIME


def _cpu_default(man: DeployManifest, device: Optional[str], spec: RuntimeSpec,
                 options: Dict[str, Any]) -> Tuple[RuntimeSpec, Optional[Precision], Dict[str, Any]]:
    """The artifact, thread count and settings the export measured fastest on its CPU with FP32's accuracy (manifest
    ``cpu_default``), where its runtime can run here; options given to load_predictor win. Otherwise ``spec``
    unchanged."""
    picked = man.cpu_default
    if picked is None or (device is not None and device != "cpu"):
        return spec, None, options
    chosen = runtime_for_artifact(picked.artifact)
    settings = dict(picked.options, **({"threads": picked.threads} if picked.threads else {}))
    if chosen is None or chosen.unusable_reason("cpu") is not None or not set(settings) <= chosen.options:
        return spec, None, options
    options = dict(options, **{k: v for k, v in settings.items() if options.get(k) is None})
    return chosen, Precision(man.artifacts[picked.artifact].effective_precision), options


def _exported_weights(man: DeployManifest) -> Path:
    """The weights file the export was made from, inside the folder and matching its sha256 (see weights_file)."""
    path = weights_file(man.folder, man.raw)
    if path.suffix.lower() not in PYTORCH.suffixes:
        raise ManifestError(f"{shown(path)}: the export's weights are not a .safetensors file or a checkpoint ({'/'.join(PYTORCH.suffixes)}); use runtime='onnxruntime'")
    return path


def _shipped_weights_match(man: DeployManifest) -> None:
    """An export of the shipped weights runs on PyTorch only if this installation ships the same bytes."""
    from ..models._weights import pretrained_path  # imports torch: only reached for the pytorch runtime

    shipped = pretrained_path(man.model)
    want = check_sha256((man.raw.get("weights") or {}).get("sha256"), "the weights record ('pretrained')", man.path)
    if sha256_file(shipped) != want:
        raise ManifestError(f"{man.path}: the export was made from other shipped weights than this installation's {shipped}; "
                            f"use runtime='onnxruntime', or re-export with this version")


def _folder_artifact(man: DeployManifest, spec: RuntimeSpec, precision: Optional[Precision]) -> Artifact:
    """The artifact ``spec`` runs from this export: the engine, or the variant at ``precision`` (by default the
    export's headline precision, else the best one the runtime has here)."""
    folder = man.folder
    if spec is TENSORRT:
        art = man.artifacts.get("engine")
        if art is None:
            raise ManifestError(f"{folder}: this export has no TensorRT engine (artifacts: {', '.join(man.artifacts)}); build one with lightseg-export on the target device")
        if precision is not None and art.precision and art.precision != precision.value:
            raise ManifestError(f"{folder}: the engine was built for {art.precision}, not {precision.value}; omit precision or rebuild the engine")
        return art
    have = {p.value: man.artifacts[artifact_key(spec, p.value)] for p in Precision if artifact_key(spec, p.value) in man.artifacts}
    if not have:
        raise ManifestError(f"{folder}: this export has no {spec.label} artifact (artifacts: {', '.join(man.artifacts)}); "
                            f"export it with lightseg-export --formats {spec.artifact_prefix or 'onnx'}")
    wanted = precision.value if precision is not None else (man.headline if man.headline in have else next(iter(have)))
    if wanted not in have:
        raise ManifestError(f"{folder}: no {wanted} {spec.label} artifact in this export; available: {', '.join(have)}")
    return have[wanted]


def _from_folder(folder: Path, spec: Optional[RuntimeSpec], device: Optional[str], options: Dict[str, Any]) -> BasePredictor:
    man = read_deploy_manifest(folder)
    _check_model_option(man, options)
    precision = _precision(options.get("precision"))
    if spec is None:
        spec = _pick_folder_runtime(man, device, precision)
        if spec is ONNXRUNTIME and precision is None:
            spec, precision, options = _cpu_default(man, device, spec, options)
    check_options(spec, options)
    pre = _preprocess_option(options.get("preprocess")) or man.preprocess
    if pre is None:
        raise ManifestError(f"{man.path}: this export records no preprocessing (exported from a bare ONNX); pass "
                            f"preprocess=PreprocessConfig(size=(H, W), mode=...) or model=NAME")
    if spec is PYTORCH:
        return _folder_pytorch(man, pre, device, options)
    art = _folder_artifact(man, spec, precision)
    input_spec = _input_spec_option(options.get("input_spec")) or man.input_spec
    verify = options.get("verify", True)
    if spec is TENSORRT:
        if not is_artifact(art.path):
            raise ManifestError(f"{shown(art.path)}: the manifest lists the engine but the file is missing")
        # The predictor hashes the very bytes it deserializes, so no swap can happen between the check and the load.
        prec = Precision(art.precision or (precision.value if precision else "fp16"))
        return _file_predictor(spec, art.path, pre, input_spec, device, prec, options,
                               expected_sha256=art.sha256 if verify else None, built_with=man.tensorrt)
    if verify:
        verify_artifact(art)
    return _file_predictor(spec, art.path, pre, input_spec, device, Precision(art.effective_precision), options)


def _folder_pytorch(man: DeployManifest, pre: PreprocessConfig, device: Optional[str], options: Dict[str, Any]) -> BasePredictor:
    """PyTorch from an export folder: the weights it was exported from."""
    if (man.raw.get("weights") or {}).get("source") == "pretrained":
        _shipped_weights_match(man)
        return _from_registry(man.model, device, options)
    weights = _exported_weights(man)
    opts = dict(options, model=options.get("model") or man.model, preprocess=pre)
    loader = _from_safetensors if weights.suffix.lower() == SAFETENSORS_SUFFIX else _from_checkpoint
    return loader(weights, device, opts)


def _from_file(path: Path, spec: Optional[RuntimeSpec], device: Optional[str], options: Dict[str, Any]) -> BasePredictor:
    kind = runtime_for_suffix(path.suffix)
    if kind is None:
        raise InvalidInputError(f"{path}: unrecognised model file type {path.suffix.lower()!r}; expected an export folder or one of "
                                f"{', '.join(known_suffixes())}")
    spec = spec or kind
    if spec is not kind:
        raise InvalidInputError(f"{path}: a {path.suffix.lower()} file runs on the {kind.runtime.value} runtime, not "
                                f"{spec.runtime.value}; export the model for {spec.runtime.value} first")
    check_options(spec, options)
    if spec is PYTORCH:
        return (_from_safetensors if path.suffix.lower() == SAFETENSORS_SUFFIX else _from_checkpoint)(path, device, options)
    found = find_manifest_for(path)
    man, art = found if found else (None, None)
    if man is not None:
        _check_model_option(man, options)
    pre = _resolve_preprocess(path, man.preprocess if man else None, options)
    input_spec = _input_spec_option(options.get("input_spec")) or (man.input_spec if man else None)
    verify = options.get("verify", True)
    recorded = art.effective_precision if art is not None else None
    if spec is TENSORRT:
        return _file_predictor(spec, path, pre, input_spec, device, _precision(options.get("precision"), recorded or "fp16"), options,
                               expected_sha256=art.sha256 if art is not None and verify else None,
                               built_with=man.tensorrt if man else None)
    if art is not None and verify:
        verify_artifact(art)
    return _file_predictor(spec, path, pre, input_spec, device, _precision(options.get("precision"), recorded or "fp32"), options)


def _looks_like_path(source: str) -> bool:
    return os.sep in source or "/" in source or Path(source).suffix.lower() in known_suffixes()


def load_predictor(source: Source, runtime: Union[str, Runtime] = "auto", device: Optional[str] = None, **options: Any) -> BasePredictor:
    """A ready predictor for ``source`` (see the module docstring for sources, runtimes and options).

    ``device``: None picks the best available for the runtime (CUDA when present), ``'cpu'``, ``'cuda'`` or
    ``'cuda:N'``. Any problem is a ``LightsegError`` whose message names the source and what was expected.
    """
    spec = _runtime(runtime)
    check_tta(options.get("tta"))  # before any model file is read
    if device is not None and not isinstance(device, str):
        device = str(device)
    if not isinstance(source, (str, os.PathLike)):
        if hasattr(source, "state_dict") and callable(source):  # a torch module, without importing torch to check
            if spec not in (None, PYTORCH):
                raise InvalidInputError(f"a model object runs on the pytorch runtime, not {spec.runtime.value}; export it first")
            check_options(PYTORCH, options)
            return _torch_model(source, _preprocess_option(options.get("preprocess")), device, options, source=type(source).__name__)
        raise InvalidInputError(f"source: expected a path, a registry model name or a model object, got {type(source).__name__}")

    if not str(source).strip():  # Path("") is the current folder
        raise InvalidInputError("source: expected a path, a registry model name or a model object, got an empty string")
    path = Path(source)
    if path.is_dir() and runtime_for_suffix(path.suffix) is None:  # a .mlpackage is a folder, but a model file
        return _from_folder(path, spec, device, options)
    if path.is_file() or path.is_dir():
        return _from_file(path, spec, device, options)
    text = str(source)
    if _looks_like_path(text):
        raise InvalidInputError(f"{text}: no such file or folder; expected an export folder or one of {', '.join(known_suffixes())}")
    if spec not in (None, PYTORCH):
        raise InvalidInputError(f"{text!r} is not a file or folder; a registry model name runs on the pytorch runtime, not {spec.runtime.value}")
    check_options(PYTORCH, options)
    return _from_registry(text, device, options)


def describe(predictor: BasePredictor) -> Tuple[str, str, str]:
    """(runtime, precision, device) as plain strings, for logs and CLI output."""
    return predictor.runtime.value, predictor.precision.value, predictor.device


__all__ = ["describe", "load_predictor"]
