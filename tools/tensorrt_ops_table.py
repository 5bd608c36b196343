#!/usr/bin/env python3
"""Regenerate lightseg_edge/export/data/tensorrt_onnx_ops.json from onnx-tensorrt's docs/operators.md.

The table is parsed, never hand-typed: each TensorRT version's operator matrix comes from one revision of
https://github.com/onnx/onnx-tensorrt/blob/<ref>/docs/operators.md, read from a local clone (``git show
<ref>:docs/operators.md``) or, where no clone holds the revision, from a saved copy of that file.

    python tools/tensorrt_ops_table.py --repo /path/to/onnx-tensorrt \\
        --version 8.5=8.5-GA --version 8.6=8.6-GA --version 10.1=release/10.1-GA \\
        --version "10.x=file:operators-10.15.md" --missing "11=<why>" --read-on 2026-11-30 \\
        [--ref-note "VERSION=<where the ref or copy came from>" ...]

(The shipped table was made exactly so, with --ref-note texts as recorded in its "source.note" fields; the 10.15
file was a stored copy of docs/operators.md whose commit could not be resolved, hence its sha256.)

``VERSION=REF`` reads a git ref of --repo (its commit is recorded); ``VERSION=file:PATH`` reads a saved copy (its
sha256 is recorded, and ``--ref-note VERSION=TEXT`` says where the copy came from). ``--missing VERSION=WHY`` records
a version for which no operators.md was available, so the preflight can say "unknown" instead of guessing.

Besides the raw columns (supported, types, restriction text), each operator gets ``checks``: the restrictions the
preflight can test on a graph, derived from the restriction text by the patterns in ``derive_checks`` (2D/3D-only
pooling, dilations, zero points, Resize modes, constant ``axes`` inputs, single-output LayerNormalization). Text no
pattern matches stays text: it is reported, not enforced.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPOSITORY = "https://github.com/onnx/onnx-tensorrt"
FILE = "docs/operators.md"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "lightseg_edge" / "export" / "data" / "tensorrt_onnx_ops.json"

# Inputs whose "must be an initializer / constant" restriction the preflight checks: op -> (input name, index).
CONST_INPUTS = {
    "Slice": ("axes", 3), "Squeeze": ("axes", 1), "Unsqueeze": ("axes", 1), "CumSum": ("axis", 1), "TopK": ("K", 1),
    **{op: ("axes", 1) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                                  "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
}
# Restrictions the parser's source enforces but its operators.md does not state: version -> op -> checks to merge,
# each with the source location it was read from. Keep this short and cited.
SOURCE_SUPPLEMENTS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "8.6": {"InstanceNormalization": {
        "constant_inputs": [{"name": "scale", "index": 1, "strict": True}, {"name": "B", "index": 2, "strict": True}],
        "note": "not in 8.6's operators.md: the default (plugin) InstanceNormalization path, instanceNormPluginHelper "
                "in onnx2trt_utils.cpp at 8.6-GA, asserts scale and B are initializers; the native path "
                "(OnnxParserFlag.kNATIVE_INSTANCENORM, default ON only from TensorRT 10) does not"}},
}
ZERO_POINT_INPUT = {"DequantizeLinear": ("x_zero_point", 2), "QuantizeLinear": ("y_zero_point", 2)}


def _ticked(text: str) -> List[str]:
    return re.findall(r"`([^`]+)`", text)


def derive_checks(op: str, restrictions: str) -> Dict[str, Any]:
    """The machine-checkable part of one operator's restriction text."""
    r = restrictions
    checks: Dict[str, Any] = {}
    if re.search(r"2D or 3D (pooling|convolutions|deconvolutions) only", r, re.I):
        checks["input_rank"] = [4, 5]  # N, C + 2 or 3 spatial axes
    if re.search(r"`dilations` must be empty or all ones", r):
        checks["dilations_all_ones"] = True
    if re.search(r"`Indices` output tensor unsupported", r) or re.search(r"Only the first output `\w+` is supported", r):
        checks["single_output"] = True
    if re.search(r"`[xy]_zero_point` must be (zero|0)", r) and op in ZERO_POINT_INPUT:
        name, index = ZERO_POINT_INPUT[op]
        checks["zero_input"] = {"name": name, "index": index}
    constant: List[Dict[str, Any]] = []
    if op in CONST_INPUTS:
        name, index = CONST_INPUTS[op]
        m = re.search(rf"`{name}`( input)? must be (an initializer|a constant tensor|a build-time constant|resolvable to a constant)", r)
        if m:
            # strict: the documented wording asks for an initializer/constant tensor; otherwise anything the parser can
            # fold to a constant will do, and the preflight only warns
            constant.append({"name": name, "index": index, "strict": m.group(2) in ("an initializer", "a constant tensor")})
    if op == "InstanceNormalization" and re.search(r"`scale` and biases `B` must be initializers", r):
        constant += [{"name": "scale", "index": 1, "strict": True}, {"name": "B", "index": 2, "strict": True}]
    if constant:
        checks["constant_inputs"] = constant
    m = re.search(r"Input rank must be >=\s*(\d) & <=\s*(\d)", r)
    if m:
        checks["input_rank"] = list(range(int(m.group(1)), int(m.group(2)) + 1))
    allowed: Dict[str, List[str]] = {}
    for label, attr in (("transformation modes", "coordinate_transformation_mode"), ("resize modes", "mode"),
                        ("nearest modes", "nearest_mode"), ("aspect ratio policy", "keep_aspect_ratio_policy")):
        m = re.search(rf"Supported (?:resize )?{label}:\s*([^<|]*)", r, re.I)
        if m and _ticked(m.group(1)):
            allowed[attr] = _ticked(m.group(1))
    if allowed:
        checks["allowed_attributes"] = allowed
    if re.search(r"Antialiasing is not supported", r):
        checks["attribute_equals"] = {"antialias": 0}
    return checks


def parse_operators_md(text: str) -> Dict[str, Any]:
    """operators.md -> header facts + {operator: {supported, experimental, types, restrictions, checks}}."""
    out: Dict[str, Any] = {}
    m = re.search(r"TensorRT\s+([0-9.]+)\s+supports operators in the inclusive range of opset\s+(\d+)\s+to opset\s+(\d+)", text)
    if m:
        out.update(doc_version=m.group(1), opset_min=int(m.group(2)), opset_max=int(m.group(3)))
    else:
        m = re.search(r"TensorRT\s+([0-9.]+)\s+supports operators up to Opset\s+(\d+)", text, re.I)
        if not m:
            raise ValueError("operators.md: no 'TensorRT X supports operators ...' header found")
        out.update(doc_version=m.group(1), opset_min=None, opset_max=int(m.group(2)))
    m = re.search(r"TensorRT supports the following ONNX data types:\s*([^\n]+)", text)
    out["data_types"] = [t.strip() for t in re.split(r",|\band\b", m.group(1)) if t.strip()] if m else []
    out["notes"] = [line.lstrip("> ").replace("Note: ", "").strip() for line in text.splitlines() if line.startswith("> ")]
    casts: Dict[str, str] = {}
    for note in out["notes"]:
        if re.search(r"cast down INT64 to INT32", note):
            casts["INT64"] = "INT32"
        if re.search(r"DOUBLE (down )?to FLOAT", note) or re.search(r"cast DOUBLE down to FLOAT", note):
            casts["DOUBLE"] = "FP32"
    out["type_casts"] = casts  # types the parser converts before checking support (from the notes above)

    ops: Dict[str, Any] = {}
    in_table = False
    for line in text.splitlines():
        if re.match(r"\|\s*Operator\s*\|", line):
            in_table = True
            continue
        if not in_table or not line.startswith("|") or re.match(r"\|\s*-+", line):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        op, flag = cells[0], (cells[1] if len(cells) > 1 else "")
        if not op:
            continue
        types = [t.strip() for t in cells[2].split(",") if t.strip()] if len(cells) > 2 else []
        restrictions = " ".join(c for c in cells[3:] if c).strip()
        supported = flag.upper().startswith("Y")
        entry: Dict[str, Any] = {"supported": supported, "types": types if supported else []}
        if "EXPERIMENTAL" in flag.upper():
            entry["experimental"] = True
        if restrictions:
            entry["restrictions"] = restrictions
        checks = derive_checks(op, restrictions) if supported else {}
        if checks:
            entry["checks"] = checks
        ops[op] = entry
    if not ops:
        raise ValueError("operators.md: no operator rows found")
    out["operators"] = dict(sorted(ops.items(), key=lambda kv: kv[0].lower()))
    return out


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def read_source(spec: str, repo: Optional[Path]) -> Tuple[str, Dict[str, Any]]:
    if spec.startswith("file:"):
        path = Path(spec[5:])
        text = path.read_text(encoding="utf-8")
        return text, {"ref": None, "commit": None, "copy": path.name}
    if repo is None:
        raise SystemExit(f"{spec}: a git ref needs --repo (a clone of {REPOSITORY})")
    text = _git(repo, "show", f"{spec}:{FILE}")
    commit = _git(repo, "rev-parse", f"{spec}^{{commit}}").strip()
    date = _git(repo, "log", "-1", "--format=%cs", commit).strip()
    return text, {"ref": spec, "commit": commit, "commit_date": date}


def _pairs(items: List[str], what: str) -> List[Tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"{what} {item!r}: expected VERSION=VALUE")
        out.append((key, value))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, help="a git clone of onnx/onnx-tensorrt")
    ap.add_argument("--version", action="append", default=[], metavar="VERSION=REF|file:PATH")
    ap.add_argument("--ref-note", action="append", default=[], metavar="VERSION=TEXT")
    ap.add_argument("--missing", action="append", default=[], metavar="VERSION=WHY")
    ap.add_argument("--read-on", required=True, help="the date the sources were read (YYYY-MM-DD)")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    notes = dict(_pairs(args.ref_note, "--ref-note"))
    versions: Dict[str, Any] = {}
    for version, spec in _pairs(args.version, "--version"):
        text, prov = read_source(spec, args.repo)
        prov["sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if version in notes:
            prov["note"] = notes[version]
        parsed = parse_operators_md(text)
        for op, extra in SOURCE_SUPPLEMENTS.get(version, {}).items():
            entry = parsed["operators"].get(op)
            if entry and entry["supported"]:
                checks = entry.setdefault("checks", {})
                for key, value in extra.items():
                    if key == "note":
                        checks["note"] = value
                    elif key == "constant_inputs":
                        have = {c["index"] for c in checks.get(key, [])}
                        checks[key] = checks.get(key, []) + [c for c in value if c["index"] not in have]
                    else:
                        checks[key] = value
        versions[version] = {"available": True, "source": prov, **parsed}
        print(f"{version}: {len(parsed['operators'])} operators from {spec} (doc says TensorRT {parsed['doc_version']})",
              file=sys.stderr)
    for version, why in _pairs(args.missing, "--missing"):
        versions[version] = {"available": False, "reason": why}
    table = {
        "schema": 1,
        "description": "ONNX operators the TensorRT ONNX parser supports, per TensorRT version, parsed from "
                       "onnx-tensorrt's docs/operators.md; regenerate with tools/tensorrt_ops_table.py",
        "source": {"repository": REPOSITORY, "file": FILE, "read_on": args.read_on,
                   "generator": "tools/tensorrt_ops_table.py"},
        "type_names": "ONNX element types as operators.md writes them: FP32=FLOAT, FP16=FLOAT16, BF16=BFLOAT16, "
                      "INT32, INT64, INT8, UINT8, BOOL, DOUBLE, FP8=FLOAT8*, INT4, FP4=FLOAT4E2M1",
        "versions": versions,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
