"""What a deployer needs, written into every exported ONNX file's ``metadata_props``, so the file describes itself
without its ``manifest.json`` (a mobile app or DeepStream config that ships only the ``.onnx``).

Keys (all strings; ``lightseg.preprocess`` and ``lightseg.weights`` are JSON):

- ``lightseg.model``: registry name; ``lightseg.precision``: fp32 | fp16 | int8 (of the graph's weights and math);
- ``lightseg.preprocess``: ``PreprocessConfig.to_dict()``: the network size and the normalisation of an RGB uint8
  image (``minmax`` is per image, which DeepStream's fixed scale/offset cannot express);
- ``lightseg.input_multiple``: H and W must be multiples of this for other sizes;
- ``lightseg.output``: what the output means; ``lightseg.threshold``: the probability a mask is cut at;
- ``lightseg.weights``: the weights record (source, sha256); ``lightseg.licence``: the weights' licence;
- ``lightseg.version``: the lightseg-edge that wrote it.

Read them back with ``onnx.load(path).metadata_props`` or, on a device with ONNX Runtime only,
``InferenceSession(path).get_modelmeta().custom_metadata_map``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from .._atomic import replaced
from .._optional import require
from .._version import __version__
from ..types import PreprocessConfig

PREFIX = "lightseg."
OUTPUT_MEANING = "logits (N,1,H,W): probability = sigmoid(logit); lesion where logit > 0, i.e. probability >= 0.5"
NO_LICENCE = "none recorded: weights not trained by lightseg-edge (random or user-supplied); check their source"


def deploy_metadata(model: str, precision: str, preprocess: Optional[PreprocessConfig], multiple: Optional[int],
                    weights: Optional[dict], licence: Optional[str], threshold: float = 0.5) -> Dict[str, str]:
    """The ``lightseg.*`` entries for one artifact; unknown fields (an ONNX exported elsewhere) are left out."""
    props = {
        "model": model, "precision": precision, "output": OUTPUT_MEANING, "threshold": f"{threshold:g}",
        "licence": licence or NO_LICENCE, "version": __version__,
        "preprocess": json.dumps(preprocess.to_dict()) if preprocess is not None else None,
        "input_multiple": str(multiple) if multiple else None,
        "weights": json.dumps(weights, sort_keys=True) if weights else None,
    }
    return {PREFIX + k: v for k, v in props.items() if v is not None}


def embed_metadata(path: Path, props: Dict[str, str]) -> Path:
    """Set ``props`` in the ONNX file's ``metadata_props`` (replacing earlier ``lightseg.*`` entries), atomically."""
    onnx = require("onnx", purpose="writing ONNX metadata")
    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in kept + sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    with replaced(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def read_metadata(path: Path) -> Dict[str, str]:
    """The ``lightseg.*`` entries of an ONNX file, without its tensors."""
    onnx = require("onnx", purpose="reading ONNX metadata")
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
