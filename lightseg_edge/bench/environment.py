"""What this machine offers: Python, OS, CPU, memory, GPU, Jetson/JetPack, and the optional packages the toolkit uses.

Shared by ``lightseg-doctor`` and the benchmark, which stores the result next to every measurement (latency moves
between TensorRT minor versions, so a number without its environment is not comparable).

Rules this module keeps, because it runs on JetPack 5 images and inside every benchmark run:
  - Python 3.8 compatible, and no torch/onnx/tensorrt import at module level;
  - no subprocesses: JetPack comes from dpkg's status file and the driver from /proc, read directly;
  - a broken install is reported in the result (``status: "broken"`` plus the error), never raised;
  - every file it reads is named in ``ProbePaths``, so tests (and a mounted device image) can point it elsewhere.

The TensorRT builder check and the GPU queries through torch are written against the documented APIs but have only
run here on a CPU machine (unverified on a GPU or a Jetson).
"""

from __future__ import annotations

import ast
import datetime
import importlib
import importlib.util
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

SCHEMA = "lightseg-environment/1"

# Import name -> distributions that provide it, most likely first. Several onnxruntime builds install the same module.
DISTRIBUTIONS = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-training"),
    "onnx": ("onnx",),
    "onnxsim": ("onnxsim", "onnx-simplifier"),
    "onnxslim": ("onnxslim",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings", "tensorrt-bindings"),
    "cuda": ("cuda-python", "cuda-bindings"),
    "pycuda": ("pycuda",),
    "pynvml": ("nvidia-ml-py", "pynvml"),
    "jtop": ("jetson-stats",),
    "numpy": ("numpy",),
    "cv2": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
    "psutil": ("psutil",),
    "openvino": ("openvino",),
    "nncf": ("nncf",),
    "ai_edge_litert": ("ai-edge-litert",),
    "litert_torch": ("litert-torch",),
    "coremltools": ("coremltools",),
}
_ORT_GPU_DISTS = ("onnxruntime-gpu",)

# L4T (Jetson Linux) release -> what that JetPack ships: (L4T major, lowest L4T minor, JetPack, Python, CUDA, TensorRT).
# From NVIDIA's JetPack release pages and TensorRT documentation, completed where those are silent by the versions
# that users' JetPack 6.x/7.x devices report (JetPack 6.0's 8.6 patch level is unconfirmed; 7.0's 10.13.x is inferred
# from 7.1). The 32.x and 35.1 rows come from NVIDIA's JetPack 4.x / 5.0.2 release notes and are listed only to say
# those releases are too old for this toolkit.
JETPACK_BY_L4T = (
    (32, 0, "4.x", "3.6", "10.2", "8.2 or older"),
    (35, 1, "5.0.2", "3.8", "11.4", "8.4.1"),
    (35, 2, "5.1.x", "3.8", "11.4", "8.5.2"),
    (36, 3, "6.0", "3.10", "12.2", "8.6.x"),
    (36, 4, "6.1/6.2", "3.10", "12.6", "10.3"),
    (38, 2, "7.0", "3.12", "13.0", "10.13.x"),
    (38, 4, "7.1", "3.12", "13.0", "10.13.3"),
    (39, 2, "7.2", "3.12", "13.2", "10.16.2"),
)


@dataclass(frozen=True)
class ProbePaths:
    """Every file the probe reads. ``search_path`` is where tools are looked up (None: $PATH)."""

    nv_tegra_release: str = "/etc/nv_tegra_release"
    device_tree_model: str = "/proc/device-tree/model"
    dpkg_status: str = "/var/lib/dpkg/status"
    meminfo: str = "/proc/meminfo"
    cpuinfo: str = "/proc/cpuinfo"
    os_release: str = "/etc/os-release"
    nvidia_driver: str = "/proc/driver/nvidia"
    jtop_socket: str = "/run/jtop.sock"
    search_path: Optional[str] = None

    @classmethod
    def under(cls, root: str | os.PathLike) -> ProbePaths:
        """The same files below ``root``: a fake system tree in tests, or a device's root filesystem mounted here."""
        root = os.fspath(root)
        base = cls()
        names = ("nv_tegra_release", "device_tree_model", "dpkg_status", "meminfo", "cpuinfo", "os_release", "nvidia_driver", "jtop_socket")
        kwargs = {n: os.path.join(root, getattr(base, n).lstrip("/")) for n in names}
        search = os.pathsep.join(os.path.join(root, d) for d in ("usr/local/bin", "usr/bin", "usr/sbin", "bin"))
        return cls(search_path=search, **kwargs)


DEFAULT_PATHS = ProbePaths()


def collect_environment(deep: bool = False, paths: Optional[ProbePaths] = None) -> Dict[str, Any]:
    """Describe this machine as a JSON-serialisable dict (schema ``lightseg-environment/1``).

    ``deep=False`` (the benchmark's default) stays fast: it imports onnxruntime and NVML, which are light, and asks
    torch and TensorRT about CUDA only if they are already imported (a benchmark of those runtimes has imported them).
    ``deep=True`` (``lightseg-doctor``) also imports torch and TensorRT and, when a GPU is present, creates a TensorRT
    builder to prove that engines can be built here. That costs seconds (torch import, CUDA initialisation).
    """
    paths = paths or DEFAULT_PATHS
    t0 = time.perf_counter()
    env: Dict[str, Any] = {
        "schema": SCHEMA,
        "collected": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "deep": bool(deep),
        "lightseg_edge": _lightseg_version(),
        "python": _python(),
        "os": _os(paths),
        "cpu": _cpu(paths),
        "memory": _memory(paths),
    }
    env["jetson"] = _jetson(paths)
    env["torch"] = _torch(import_it=deep or "torch" in sys.modules)
    env["nvml"] = _nvml()
    env["gpu"] = _gpu(env["torch"], env["nvml"], env["jetson"], paths)
    env["tensorrt"] = _tensorrt(import_it=deep or "tensorrt" in sys.modules, gpu_present=env["gpu"]["present"])
    env["onnxruntime"] = _onnxruntime()
    env["cuda_python"] = _cuda_python()
    env["pycuda"] = _package("pycuda")
    env["packages"] = {name: _package(name) for name in ("numpy", "cv2", "onnx", "onnxslim", "onnxsim", "psutil", "openvino", "nncf",
                                                         "ai_edge_litert", "litert_torch", "coremltools")}
    env["tools"] = _tools(paths)
    env["probe_seconds"] = round(time.perf_counter() - t0, 3)
    return env


# --- small helpers -------------------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _spec_exists(name: str) -> bool:
    """Whether ``name`` is importable, without importing it (a dotted name imports its parent package)."""
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:  # broken parent package, or a module object without __spec__
        return False


def _installed_distributions(module: str) -> List[Tuple[str, str]]:
    from importlib import metadata

    found = []
    for dist in DISTRIBUTIONS.get(module, (module,)):
        try:
            found.append((dist, metadata.version(dist)))
        except Exception:  # PackageNotFoundError, or unreadable metadata
            continue
    return found


def _package(module: str, spec_name: Optional[str] = None) -> Dict[str, Any]:
    """Presence and version of a package from its metadata; ``status`` is 'ok' or 'missing' (nothing is imported)."""
    info: Dict[str, Any] = {"status": "missing", "version": None, "distribution": None, "error": None}
    if not _spec_exists(spec_name or module):
        return info
    info["status"] = "ok"
    dists = _installed_distributions(module)
    if dists:
        info["distribution"], info["version"] = dists[0]
    return info


def _import(module: str, info: Dict[str, Any]) -> Any:
    """Import ``module``; on failure mark ``info`` broken with the error and return None."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # a missing shared library raises OSError, a bad wheel anything
        info["status"], info["error"] = "broken", _describe(exc)
        return None


def _read(path: str, limit: int = 1 << 16) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- system ----------------------------------------------------------------------------------------------------------


def _lightseg_version() -> str:
    from .._version import __version__

    return __version__


def _python() -> Dict[str, Any]:
    base_prefix = getattr(sys, "base_prefix", sys.prefix)
    in_venv = sys.prefix != base_prefix
    system_site: Optional[bool] = None
    if in_venv:
        cfg = _read(os.path.join(sys.prefix, "pyvenv.cfg")) or ""
        m = re.search(r"^\s*include-system-site-packages\s*=\s*(\w+)", cfg, re.MULTILINE)
        system_site = bool(m and m.group(1).lower() == "true")
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "venv": in_venv,
        "system_site_packages": system_site,
    }


def _os(paths: ProbePaths) -> Dict[str, Any]:
    pretty = None
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', _read(paths.os_release) or "", re.MULTILINE)
    if m:
        pretty = m.group(1)
    return {"system": platform.system(), "release": platform.release(), "machine": platform.machine(), "distribution": pretty}


# The vector extensions that decide which kernels the runtimes pick (a 2-core AVX2 machine and a 2-core AVX-512 one
# rank the same variants differently, and bf16 is native only with AVX512-BF16 or AMX): /proc/cpuinfo flag -> name.
_VECTOR_FLAGS = (("avx2", "AVX2"), ("avx_vnni", "AVX-VNNI"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX512-VNNI"),
                 ("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX"),
                 ("asimd", "NEON"), ("asimddp", "dotprod"), ("i8mm", "i8mm"), ("bf16", "BF16"), ("sve", "SVE"))


def _vector_isa(text: str) -> List[str]:
    """The extensions of ``_VECTOR_FLAGS`` the first processor's flags (x86) or features (ARM) line lists."""
    m = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.MULTILINE)
    have = set(m.group(1).split()) if m else set()
    return [name for flag, name in _VECTOR_FLAGS if flag in have]


def cpu_label(cpu: Optional[Dict[str, Any]]) -> Optional[str]:
    """``collect_environment()["cpu"]`` in a few words: its model and vector extensions, "AMD EPYC (AVX2)"."""
    cpu = cpu or {}
    isa = cpu.get("vector_isa") or []
    return f"{cpu.get('model') or 'unknown CPU'} ({', '.join(isa)})" if isa else cpu.get("model")


def _cpu(paths: ProbePaths) -> Dict[str, Any]:
    model = None
    text = _read(paths.cpuinfo, limit=1 << 20) or ""
    for key in ("model name", "Hardware", "Processor"):  # x86, then older ARM kernels
        m = re.search(r"^" + re.escape(key) + r"\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            model = m.group(1).strip()
            break
    usable = None
    if hasattr(os, "sched_getaffinity"):
        try:
            usable = len(os.sched_getaffinity(0))
        except OSError:
            usable = None
    return {"model": model or platform.processor() or platform.machine() or None, "vector_isa": _vector_isa(text),
            "logical_cores": os.cpu_count(), "usable_cores": usable}


def _memory(paths: ProbePaths) -> Dict[str, Any]:
    fields = {}
    for line in (_read(paths.meminfo) or "").splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            fields[m.group(1)] = int(m.group(2))
    if "MemTotal" in fields:
        avail = fields.get("MemAvailable", fields.get("MemFree"))
        return {"total_mb": fields["MemTotal"] // 1024, "available_mb": None if avail is None else avail // 1024, "source": "meminfo"}
    if _spec_exists("psutil"):  # macOS / Windows
        try:
            import psutil

            vm = psutil.virtual_memory()
            return {"total_mb": int(vm.total) >> 20, "available_mb": int(vm.available) >> 20, "source": "psutil"}
        except Exception:
            pass
    return {"total_mb": None, "available_mb": None, "source": None}


# --- Jetson ----------------------------------------------------------------------------------------------------------


def _dpkg_versions(path: str, packages: Sequence[str]) -> Dict[str, str]:
    """Installed versions of ``packages`` from dpkg's status file (what ``dpkg-query -W`` prints, without a subprocess)."""
    text = _read(path, limit=64 << 20)
    found: Dict[str, str] = {}
    if not text:
        return found
    wanted = set(packages)
    for stanza in text.split("\n\n"):
        m = re.match(r"Package:\s*(\S+)", stanza.lstrip("\n"))
        if not m or m.group(1) not in wanted:
            continue
        status = re.search(r"^Status:\s*(.+)$", stanza, re.MULTILINE)
        version = re.search(r"^Version:\s*(\S+)", stanza, re.MULTILINE)
        if version and (status is None or "installed" in status.group(1).split()):
            found[m.group(1)] = version.group(1)
    return found


def parse_l4t_release(text: str) -> Optional[str]:
    """'# R35 (release), REVISION: 4.1, ...' -> '35.4.1'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)", text or "")
    return f"{m.group(1)}.{m.group(2).rstrip('.')}" if m else None


def jetpack_for_l4t(l4t: Optional[str]) -> Optional[Dict[str, str]]:
    """What the JetPack that ships L4T ``l4t`` contains, or None when the release is not in ``JETPACK_BY_L4T``."""
    m = re.match(r"(\d+)(?:\.(\d+))?", l4t or "")
    if not m:
        return None
    major, minor = int(m.group(1)), int(m.group(2) or 0)
    best = None
    for row in JETPACK_BY_L4T:
        if row[0] == major and row[1] <= minor and (best is None or row[1] > best[1]):
            best = row
    if best is None:
        return None
    return {"jetpack": best[2], "python": best[3], "cuda": best[4], "tensorrt": best[5]}


def _jetson(paths: ProbePaths) -> Dict[str, Any]:
    l4t = parse_l4t_release(_read(paths.nv_tegra_release) or "")
    model = (_read(paths.device_tree_model) or "").strip("\x00 \n") or None
    dpkg = _dpkg_versions(paths.dpkg_status, ("nvidia-jetpack", "nvidia-l4t-core"))
    l4t_source = "nv_tegra_release" if l4t else None
    if not l4t and "nvidia-l4t-core" in dpkg:  # containers often lack /etc/nv_tegra_release but carry the package
        l4t, l4t_source = dpkg["nvidia-l4t-core"].split("-")[0], "dpkg"
    detected = bool(l4t or (model and "jetson" in model.lower()))
    expected = jetpack_for_l4t(l4t) if detected else None
    jetpack, jp_source = None, None
    if "nvidia-jetpack" in dpkg:
        jetpack, jp_source = re.split(r"[-+]", dpkg["nvidia-jetpack"])[0], "dpkg"
    elif expected:
        jetpack, jp_source = expected["jetpack"], "l4t"
    return {
        "detected": detected,
        "model": model if detected else None,
        "l4t": l4t,
        "l4t_source": l4t_source,
        "jetpack": jetpack,
        "jetpack_source": jp_source,
        "expected": expected,
    }


# --- torch, NVML, GPU ------------------------------------------------------------------------------------------------


def _torch_version_file(info: Dict[str, Any]) -> None:
    """torch/version.py holds the version and the CUDA it was built for: read it as text, torch stays unimported."""
    try:
        spec = importlib.util.find_spec("torch")
        locations = list(spec.submodule_search_locations or []) if spec else []
    except Exception:
        return
    for loc in locations:
        text = _read(os.path.join(loc, "version.py"))
        if not text:
            continue
        for key, field in (("__version__", "version"), ("cuda", "build_cuda")):
            m = re.search(r"^" + re.escape(key) + r"\s*(?::[^=\n]*)?=\s*(.+)$", text, re.MULTILINE)
            if m:
                try:
                    value = ast.literal_eval(m.group(1).strip())
                except (ValueError, SyntaxError):
                    continue
                if value is not None or field == "build_cuda":
                    info[field] = value if value is None else str(value)
        return


def _torch(import_it: bool) -> Dict[str, Any]:
    info = _package("torch")
    info.update({"build_cuda": None, "cuda_available": None, "cudnn": None, "devices": []})
    if info["status"] != "ok":
        return info
    _torch_version_file(info)
    if not import_it:
        return info
    torch = _import("torch", info)
    if torch is None:
        return info
    try:
        info["version"] = str(torch.__version__)
        info["build_cuda"] = getattr(torch.version, "cuda", None)
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                info["devices"].append(
                    {"name": props.name, "compute_capability": f"{props.major}.{props.minor}", "memory_mb": int(props.total_memory) >> 20}
                )
            cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
            info["cudnn"] = None if cudnn is None else str(cudnn)
    except Exception as exc:  # CUDA initialisation errors (driver too old, device busy) are reported, not raised
        info["error"] = _describe(exc)
    return info


def _nvml() -> Dict[str, Any]:
    info = _package("pynvml")
    info.update({"driver": None, "cuda_driver": None, "devices": []})
    if info["status"] != "ok":
        return info
    pynvml = _import("pynvml", info)
    if pynvml is None:
        return info
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no NVIDIA driver on this machine: installed but nothing to talk to
        info["error"] = _describe(exc)
        return info
    try:
        info["driver"] = _text(pynvml.nvmlSystemGetDriverVersion())
        try:
            v = int(pynvml.nvmlSystemGetCudaDriverVersion())
            info["cuda_driver"] = f"{v // 1000}.{(v % 1000) // 10}"
        except Exception:
            pass
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            dev = {"name": _text(pynvml.nvmlDeviceGetName(handle)), "compute_capability": None, "memory_mb": None}
            try:
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                dev["compute_capability"] = f"{major}.{minor}"
            except Exception:
                pass
            try:  # NotSupported on Jetson (unified memory)
                dev["memory_mb"] = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) >> 20
            except Exception:
                pass
            info["devices"].append(dev)
    except Exception as exc:
        info["error"] = _describe(exc)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return info


def _proc_driver(paths: ProbePaths) -> Tuple[Optional[str], List[str]]:
    """Driver version and GPU models from /proc/driver/nvidia (desktop driver; absent without one)."""
    version = None
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)", _read(os.path.join(paths.nvidia_driver, "version")) or "")
    if m:
        version = m.group(1)
    models = []
    gpus_dir = os.path.join(paths.nvidia_driver, "gpus")
    try:
        entries = sorted(os.listdir(gpus_dir))
    except OSError:
        entries = []
    for entry in entries:
        mm = re.search(r"^Model:\s*(.+)$", _read(os.path.join(gpus_dir, entry, "information")) or "", re.MULTILINE)
        if mm:
            models.append(mm.group(1).strip())
    return version, models


def _gpu(torch_info: Dict[str, Any], nvml: Dict[str, Any], jetson: Dict[str, Any], paths: ProbePaths) -> Dict[str, Any]:
    driver, proc_models = _proc_driver(paths)
    if torch_info.get("devices"):
        devices, source = torch_info["devices"], "torch"
    elif nvml.get("devices"):
        devices, source = nvml["devices"], "nvml"
    elif proc_models:
        devices, source = [{"name": n, "compute_capability": None, "memory_mb": None} for n in proc_models], "driver"
    elif jetson["detected"]:  # integrated GPU; torch/NVML may not see it when their Jetson builds are missing
        devices, source = [{"name": f"{jetson['model'] or 'Jetson'} (integrated)", "compute_capability": None, "memory_mb": None}], "jetson"
    else:
        devices, source = [], None
    return {"present": bool(devices), "devices": devices, "source": source, "driver": nvml.get("driver") or driver}


# --- TensorRT, ONNX Runtime, CUDA bindings ---------------------------------------------------------------------------


def _tensorrt(import_it: bool, gpu_present: bool) -> Dict[str, Any]:
    info = _package("tensorrt")
    info.update({"can_build": None, "build_check": "not checked", "features": {}})
    if info["status"] != "ok":
        info["build_check"] = "TensorRT not installed"
        return info
    if not import_it:
        return info
    trt = _import("tensorrt", info)
    if trt is None:
        info["build_check"] = "TensorRT does not import"
        return info
    info["version"] = str(getattr(trt, "__version__", info["version"]))
    try:  # feature tests, not version strings: these decide the export/build path
        info["features"] = {
            "strongly_typed": hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
            "builder_fp16_flag": hasattr(trt.BuilderFlag, "FP16"),
            "int8_calibrator": hasattr(trt, "IInt8EntropyCalibrator2"),
        }
    except Exception as exc:
        info["error"] = _describe(exc)
    if not gpu_present:
        info["build_check"] = "skipped: no GPU"
        return info
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        info["can_build"] = builder is not None
        info["build_check"] = "builder created" if builder is not None else "trt.Builder returned None (no usable CUDA device?)"
        del builder
    except Exception as exc:
        info["can_build"], info["build_check"] = False, _describe(exc)
    return info


def _onnxruntime() -> Dict[str, Any]:
    info = _package("onnxruntime")
    info.update({"distributions": [], "providers": [], "device": None})
    if info["status"] != "ok":
        return info
    info["distributions"] = [f"{d}=={v}" for d, v in _installed_distributions("onnxruntime")]
    ort = _import("onnxruntime", info)
    if ort is None:
        return info
    try:
        info["version"] = str(ort.__version__)
        info["providers"] = list(ort.get_available_providers())
        info["device"] = str(ort.get_device())
    except Exception as exc:
        info["status"], info["error"] = "broken", _describe(exc)
    return info


def onnxruntime_conflict(ort_info: Dict[str, Any]) -> bool:
    """True when a CPU and a GPU onnxruntime distribution are both installed (they overwrite one module)."""
    names = [d.split("==")[0] for d in ort_info.get("distributions", [])]
    return any(n in _ORT_GPU_DISTS for n in names) and any(n not in _ORT_GPU_DISTS for n in names)


def _cuda_python() -> Dict[str, Any]:
    # cuda-python >= 12.6 puts the bindings in cuda.bindings; older releases expose cuda.cudart directly.
    if _spec_exists("cuda.bindings"):
        info = _package("cuda", spec_name="cuda.bindings")
        info["api"] = "cuda.bindings"
    else:
        info = _package("cuda", spec_name="cuda.cudart")
        info["api"] = "cuda.cudart (legacy)" if info["status"] == "ok" else None
    return info


def _tools(paths: ProbePaths) -> Dict[str, Any]:
    jtop = _package("jtop")
    jtop["service_running"] = os.path.exists(paths.jtop_socket)
    return {"tegrastats": shutil.which("tegrastats", path=paths.search_path), "jtop": jtop}
