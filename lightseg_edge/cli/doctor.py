"""lightseg-doctor: what this machine can do (export, ONNX Runtime, TensorRT, GPU, Jetson) and what to install."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional, Tuple

from .._optional import _EXTRAS
from ..bench.environment import collect_environment, cpu_label, onnxruntime_conflict
from ._common import run_cli

# The ORT GPU build is its own extra: the CPU and GPU packages install the same module and must not be mixed.
_ORT_GPU_EXTRA = "gpu"
_JETSON_ORT = (
    "onnxruntime-gpu for Jetson comes from the Jetson AI Lab / NVIDIA package index for your JetPack, not from PyPI "
    "(PyPI has no Jetson builds)"
)


def _pip(extra: str) -> str:
    return f"pip install 'lightseg-edge[{extra}]'"


def _extra(module: str) -> str:
    return _EXTRAS.get(module, ("", ""))[0]


def _py_minor(version: str) -> Tuple[int, int]:
    parts = (version.split(".") + ["0", "0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return (0, 0)


def install_hints(env: Dict[str, Any]) -> List[Dict[str, str]]:
    """One entry per missing or broken piece: ``{"component", "problem", "fix", "useful_here"}``; ``useful_here`` is
    False for GPU-only pieces on a machine without an NVIDIA GPU (install those on the target). Empty when nothing is
    missing."""
    hints: List[Dict[str, Any]] = []

    def add(component: str, problem: str, fix: str, useful_here: bool = True) -> None:
        hints.append({"component": component, "problem": problem, "fix": fix, "useful_here": useful_here})

    jetson = env["jetson"]
    on_jetson = bool(jetson["detected"])
    jp = f"JetPack {jetson['jetpack']}" if jetson.get("jetpack") else "JetPack"
    gpu = bool(env["gpu"]["present"])
    py = env["python"]
    torch, ort, trt = env["torch"], env["onnxruntime"], env["tensorrt"]

    if _py_minor(py["version"]) < (3, 8):
        add(
            "python",
            f"Python {py['version']} is older than 3.8, the oldest lightseg-edge supports",
            "use Python 3.8 or newer (JetPack 5 or later on Jetson)",
        )
    expected = jetson.get("expected") or {}
    if on_jetson and expected.get("python") and _py_minor(expected["python"]) != _py_minor(py["version"]) and trt["status"] != "ok":
        add(
            "python",
            f"{jp}'s TensorRT and CUDA Python bindings are built for its system Python {expected['python']}; this is Python {py['version']}",
            f"run lightseg-edge with the system python{expected['python']} (or a venv made from it with --system-site-packages)",
        )

    # PyTorch: training, export and the PyTorch runtime
    if torch["status"] == "missing":
        fix = (
            f"install NVIDIA's PyTorch build for {jp} (Jetson AI Lab index), not the generic aarch64 wheel from PyPI"
            if on_jetson
            else _pip(_extra("torch"))
        )
        add("torch", "not installed (needed to train, to export ONNX and for the PyTorch runtime)", fix)
    elif torch["status"] == "broken":
        add("torch", f"installed but does not import ({torch['error']})", "reinstall torch")
    elif torch["cuda_available"] is False and gpu:
        fix = (
            f"install NVIDIA's PyTorch build for {jp} (Jetson AI Lab index)"
            if on_jetson
            else "install a CUDA build of torch (https://pytorch.org/get-started/locally/)"
        )
        add(
            "torch", f"torch {torch['version']} cannot use the GPU here ({torch.get('error') or 'CPU-only build or CUDA unavailable'})", fix
        )

    # ONNX tooling
    for module, why in (("onnx", "needed to export ONNX"), ("onnxslim", "the default ONNX simplifier")):
        info = env["packages"][module]
        if info["status"] != "ok":
            add(module, f"not installed ({why})", _pip(_extra(module)))
    if env["packages"]["onnxsim"]["status"] != "ok":
        fix = "optional; onnxslim does the same job" + (
            " (onnxsim has no aarch64 wheel for Python 3.8/3.9: it builds from source with cmake)"
            if on_jetson
            else f": {_pip(_extra('onnxsim'))}"
        )
        add("onnxsim", "not installed (optional second simplifier)", fix)

    # ONNX Runtime
    if ort["status"] == "missing":
        if on_jetson:
            add("onnxruntime", "not installed (ONNX Runtime runtime, INT8 calibration)", _JETSON_ORT)
        elif gpu:
            add("onnxruntime", "not installed (ONNX Runtime runtime, INT8 calibration)", f"{_pip(_ORT_GPU_EXTRA)} (onnxruntime-gpu)")
        else:
            add("onnxruntime", "not installed (ONNX Runtime runtime, INT8 calibration)", _pip(_extra("onnxruntime")))
    elif ort["status"] == "broken":
        add("onnxruntime", f"installed but does not import ({ort['error']})", "reinstall exactly one of onnxruntime / onnxruntime-gpu")
    else:
        if onnxruntime_conflict(ort):
            add(
                "onnxruntime",
                f"several builds installed ({', '.join(ort['distributions'])}); they overwrite the same module",
                "pip uninstall -y onnxruntime onnxruntime-gpu, then install only the one you need",
            )
        if gpu and "CUDAExecutionProvider" not in ort["providers"]:
            fix = _JETSON_ORT if on_jetson else f"pip uninstall -y onnxruntime && {_pip(_ORT_GPU_EXTRA)} (onnxruntime-gpu)"
            add("onnxruntime", "this build has no CUDA provider although a GPU is present", fix)

    # TensorRT
    if trt["status"] == "missing":
        if on_jetson:
            fix = f"TensorRT comes with {jp} (apt: python3-libnvinfer), not from pip: the aarch64 pip wheels are server-ARM (SBSA) builds"
            if py["venv"] and not py["system_site_packages"]:
                fix += "; this venv hides the system packages: recreate it with python3 -m venv --system-site-packages"
            add("tensorrt", "not importable (needed to build and run engines)", fix)
        else:
            add("tensorrt", "not installed (needed to build and run engines)", _pip(_extra("tensorrt")), useful_here=gpu)
    elif trt["status"] == "broken":
        fix = (
            f"use the TensorRT from {jp}" if on_jetson else "reinstall TensorRT for your CUDA major version (tensorrt-cu12 / tensorrt-cu13)"
        )
        add("tensorrt", f"installed but does not import ({trt['error']})", fix)
    elif trt["can_build"] is False:
        add(
            "tensorrt",
            f"cannot create a builder: {trt['build_check']}",
            "check the NVIDIA driver and that the GPU is visible (CUDA_VISIBLE_DEVICES)",
        )

    # Device buffers for the TensorRT runtime: torch CUDA first, then cuda-python, pycuda last.
    if env["cuda_python"]["status"] != "ok":
        if torch["cuda_available"]:
            fix = "optional: torch's CUDA tensors are used for TensorRT buffers"
        elif on_jetson:
            fix = f"pip install 'cuda-python=={expected.get('cuda', 'X.Y').split('.')[0]}.*' (match {jp}'s CUDA major version)"
        else:
            fix = f"{_pip(_extra('cuda'))} (pin cuda-python to the driver's CUDA major version)"
        add("cuda-python", "not installed (device buffers for the TensorRT runtime when torch has no CUDA)", fix, useful_here=gpu or on_jetson)
    if env["pycuda"]["status"] != "ok":
        # No extra carries pycuda: it has no binary wheels and compiles against the CUDA toolkit.
        add("pycuda", "not installed (optional buffer backend)", "optional: pip install pycuda (builds from source: needs nvcc and cuda.h)",
            useful_here=gpu or on_jetson)

    # GPU metrics
    nvml = env["nvml"]
    if on_jetson:
        if not env["tools"]["tegrastats"]:
            add(
                "tegrastats",
                "not found (the Jetson memory/power source for the benchmark)",
                "it ships with L4T in /usr/bin; inside a container, mount it from the host",
            )
        jtop = env["tools"]["jtop"]
        if jtop["status"] != "ok":
            add("jtop", "not installed (optional)", "sudo pip3 install jetson-stats")
        elif not jtop["service_running"]:
            add(
                "jtop",
                "installed but its service is not running",
                "sudo systemctl restart jtop.service (in a container: mount /run/jtop.sock)",
            )
    elif nvml["status"] != "ok":
        add("nvidia-ml-py", "not installed (GPU memory and driver figures in the benchmark)", _pip(_extra("pynvml")), useful_here=gpu)
    elif nvml.get("distribution") == "pynvml":
        add("nvidia-ml-py", "the deprecated 'pynvml' package provides NVML here", "pip uninstall -y pynvml && pip install nvidia-ml-py")
    return hints


def _ok(info: Dict[str, Any]) -> bool:
    return info["status"] == "ok"


def capabilities(env: Dict[str, Any]) -> List[Tuple[str, str]]:
    """What can run here, one (task, answer) pair per toolkit step."""
    torch, ort, trt = env["torch"], env["onnxruntime"], env["tensorrt"]
    pk = env["packages"]
    rows = []
    if _ok(torch):
        rows.append(("train / PyTorch runtime", "yes, on CUDA" if torch["cuda_available"] else "yes, on CPU"))
    else:
        rows.append(("train / PyTorch runtime", "no (torch " + torch["status"] + ")"))
    rows.append(("export ONNX", "yes" if _ok(torch) and _ok(pk["onnx"]) else "no (needs torch and onnx)"))
    slims = [n for n in ("onnxslim", "onnxsim") if _ok(pk[n])]
    rows.append(("simplify ONNX", ", ".join(slims) if slims else "no (needs onnxslim)"))
    rows.append(
        ("INT8 Q/DQ calibration", "yes (ONNX Runtime quantization)" if _ok(ort) and _ok(pk["onnx"]) else "no (needs onnxruntime and onnx)")
    )
    if _ok(ort):
        eps = [
            name
            for p, name in (
                ("CPUExecutionProvider", "CPU"),
                ("CUDAExecutionProvider", "CUDA"),
                ("TensorrtExecutionProvider", "TensorRT EP"),
            )
            if p in ort["providers"]
        ]
        rows.append(("ONNX Runtime inference", ", ".join(eps) or "no usable provider"))
    else:
        rows.append(("ONNX Runtime inference", "no (onnxruntime " + ort["status"] + ")"))
    if not _ok(trt):
        rows.append(("TensorRT engine build", "no (TensorRT " + ("not installed" if trt["status"] == "missing" else "broken") + ")"))
    elif trt["can_build"] is None:
        rows.append(("TensorRT engine build", "unknown (" + trt["build_check"] + ")"))
    else:
        rows.append(("TensorRT engine build", "yes" if trt["can_build"] else "no (" + trt["build_check"] + ")"))
    buffers = [
        n
        for n, yes in (("torch CUDA", torch["cuda_available"]), ("cuda-python", _ok(env["cuda_python"])), ("pycuda", _ok(env["pycuda"])))
        if yes
    ]
    rows.append(("TensorRT device buffers", ", ".join(buffers) if buffers else "none"))
    metrics = []
    if env["nvml"]["devices"]:
        metrics.append("NVML")
    if env["tools"]["tegrastats"]:
        metrics.append("tegrastats")
    if _ok(env["tools"]["jtop"]) and env["tools"]["jtop"]["service_running"]:
        metrics.append("jtop")
    rows.append(("GPU memory/power metrics", ", ".join(metrics) if metrics else "none (process RSS only)"))
    rows.extend(_target_rows())
    return rows


def _target_rows() -> List[Tuple[str, str]]:
    """One row per runtime of the registry that has its own export format (OpenVINO, LiteRT, Core ML)."""
    from ..runtimes.registry import RUNTIMES

    rows = []
    for spec in RUNTIMES.values():
        if spec.artifact_prefix is None:
            continue
        reason = spec.unusable_reason()
        if reason is None:
            answer = "export and run"
        elif spec.available():
            answer = f"export only ({reason})"
        else:
            answer = f"no ({reason})"
        rows.append((f"{spec.label} ({spec.artifact_prefix})", answer))
    return rows


def _pkg(info: Dict[str, Any]) -> str:
    if info["status"] == "missing":
        return "not installed"
    version = info.get("version") or "version unknown"
    if info["status"] == "broken":
        return f"{version}  BROKEN: {info['error']}"
    return version


def render(env: Dict[str, Any], hints: List[Dict[str, str]]) -> str:
    py, osi, cpu, mem, gpu, jet = env["python"], env["os"], env["cpu"], env["memory"], env["gpu"], env["jetson"]
    torch, ort, trt = env["torch"], env["onnxruntime"], env["tensorrt"]
    rows: List[Tuple[str, str]] = []
    venv = ""
    if py["venv"]:
        venv = " (venv, system site-packages " + ("on" if py["system_site_packages"] else "off") + ")"
    rows.append(("Python", f"{py['version']} {py['implementation']}  {py['executable']}{venv}"))
    rows.append(("OS", " ".join(str(x) for x in (osi["distribution"] or osi["system"], osi["machine"], "kernel " + osi["release"]))))
    cores = f"{cpu['logical_cores']} logical cores" + (
        f", {cpu['usable_cores']} usable" if cpu["usable_cores"] not in (None, cpu["logical_cores"]) else ""
    )
    rows.append(("CPU", f"{cpu_label(cpu) or 'unknown'}, {cores}"))
    if mem["total_mb"]:
        rows.append(("memory", f"{mem['available_mb'] / 1024:.1f} GiB free of {mem['total_mb'] / 1024:.1f} GiB"))
    else:
        rows.append(("memory", "unknown"))
    if jet["detected"]:
        jp = jet["jetpack"] or "unknown"
        src = {"dpkg": "from nvidia-jetpack", "l4t": "from the L4T release"}.get(jet["jetpack_source"] or "", "")
        exp = jet["expected"] or {}
        ships = f"; ships Python {exp['python']}, CUDA {exp['cuda']}, TensorRT {exp['tensorrt']}" if exp else ""
        rows.append(("Jetson", f"{jet['model'] or 'yes'}, L4T {jet['l4t'] or 'unknown'}, JetPack {jp} {src}{ships}".replace("  ", " ")))
    else:
        rows.append(("Jetson", "no"))
    if gpu["present"]:
        for d in gpu["devices"]:
            extra = [
                f"compute capability {d['compute_capability']}" if d.get("compute_capability") else "",
                f"{d['memory_mb']} MiB" if d.get("memory_mb") else "",
            ]
            rows.append(("GPU", ", ".join([d["name"]] + [e for e in extra if e]) + f"  [via {gpu['source']}]"))
    else:
        rows.append(("GPU", "none detected"))
    rows.append(("NVIDIA driver", gpu["driver"] or "none"))
    if torch["status"] == "ok":
        if torch["cuda_available"]:
            cuda = f"CUDA {torch['build_cuda']} available" + (f", cuDNN {torch['cudnn']}" if torch["cudnn"] else "")
        elif torch["cuda_available"] is False:
            cuda = "CUDA not available" + (" (CPU-only build)" if not torch["build_cuda"] else f" (built for CUDA {torch['build_cuda']})")
            if torch.get("error"):
                cuda += f": {torch['error']}"
        else:
            cuda = f"CUDA not checked (built for {'CUDA ' + torch['build_cuda'] if torch['build_cuda'] else 'CPU'})"
        rows.append(("torch", f"{torch['version']}  {cuda}"))
    else:
        rows.append(("torch", _pkg(torch)))
    ort_text = _pkg(ort)
    if ort["status"] == "ok":
        ort_text += f"  [{', '.join(ort['distributions'])}]  providers: {', '.join(ort['providers']) or 'none'}"
    rows.append(("onnxruntime", ort_text))
    for name in ("onnx", "onnxslim", "onnxsim", "numpy", "cv2"):
        rows.append((name, _pkg(env["packages"][name])))
    trt_text = _pkg(trt)
    if trt["status"] == "ok":
        feats = ", ".join(k for k, v in sorted(trt["features"].items()) if v)
        trt_text += f"  build: {trt['build_check']}" + (f"  features: {feats}" if feats else "")
    rows.append(("tensorrt", trt_text))
    cp = env["cuda_python"]
    rows.append(("cuda-python", _pkg(cp) + (f"  ({cp['api']})" if cp["status"] == "ok" and cp.get("api") else "")))
    rows.append(("pycuda", _pkg(env["pycuda"])))
    nvml = env["nvml"]
    nvml_text = _pkg(nvml)
    if nvml["status"] == "ok":
        nvml_text += f"  driver {nvml['driver']}" if nvml["driver"] else f"  ({nvml['error'] or 'no driver'})"
    rows.append(("nvidia-ml-py", nvml_text))
    rows.append(("tegrastats", env["tools"]["tegrastats"] or "not found"))
    jtop = env["tools"]["jtop"]
    rows.append(("jtop", _pkg(jtop) + ("  service running" if jtop["status"] == "ok" and jtop["service_running"] else "")))

    width = max(len(k) for k, _ in rows + capabilities(env))
    lines = [f"lightseg-doctor (lightseg-edge {env['lightseg_edge']}), probed in {env['probe_seconds']:.1f} s", ""]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines += ["", "What this machine can do:"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in capabilities(env)]
    lines += [""]
    here = [h for h in hints if h["useful_here"]]
    elsewhere = [h for h in hints if not h["useful_here"]]
    if here:
        lines.append("To install / fix (useful on this machine):")
        for h in here:
            lines += [f"  - {h['component']}: {h['problem']}", f"      {h['fix']}"]
    else:
        lines.append("Nothing missing for what this machine can do.")
    if elsewhere:
        lines += ["", "For a GPU target, not useful here (no NVIDIA GPU): install on the machine that builds and runs engines:"]
        lines += [f"  - {h['component']}: {h['fix']}" for h in elsewhere]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightseg-doctor", description=__doc__)
    p.add_argument("--json", action="store_true", help="print the environment and the hints as JSON")
    p.add_argument("--fast", action="store_true", help="do not import torch or TensorRT (no CUDA or builder check)")
    return p


def _run(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    env = collect_environment(deep=not args.fast)
    hints = install_hints(env)
    if args.json:
        out = dict(env)
        out["capabilities"] = dict(capabilities(env))
        out["hints"] = hints
        print(json.dumps(out, indent=2, sort_keys=False))
    else:
        print(render(env, hints))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
