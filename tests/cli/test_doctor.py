"""lightseg-doctor and the environment probe it shares with the benchmark.

The Jetson, GPU and broken-install cases run against fake system trees (``ProbePaths.under``) and fake packages on
sys.path, so they run on this CPU machine; the "this machine" tests compare the report with what the installed
packages themselves say.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightseg_edge._optional import _EXTRAS
from lightseg_edge.bench import environment
from lightseg_edge.bench.environment import ProbePaths, collect_environment, jetpack_for_l4t, parse_l4t_release
from lightseg_edge.cli.doctor import main

REAL_FIND_SPEC = importlib.util.find_spec


def _nvidia_hardware() -> bool:
    if os.path.exists("/proc/driver/nvidia") or os.path.exists("/etc/nv_tegra_release"):
        return True
    if REAL_FIND_SPEC("torch") is not None:
        import torch

        return torch.cuda.is_available()
    return False


cpu_machine = pytest.mark.skipif(_nvidia_hardware(), reason="asserts the CPU-machine report; this machine has an NVIDIA GPU")


def _run_json(capsys, *args: str) -> dict:
    assert main(["--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _hint(report: dict, component: str) -> dict:
    found = [h for h in report["hints"] if h["component"] == component]
    assert found, f"no hint for {component}: {report['hints']}"
    return found[0]


def _hide(monkeypatch, *names: str) -> None:
    """Make ``names`` look uninstalled to importlib.util.find_spec (what the probe uses)."""

    def fake(name, package=None):
        if name in names or name.split(".")[0] in names:
            return None
        return REAL_FIND_SPEC(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


@pytest.fixture
def bare_root(tmp_path, monkeypatch) -> Path:
    """An empty system tree: no Jetson files, no NVIDIA driver, no tools."""
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setattr(environment, "DEFAULT_PATHS", ProbePaths.under(root))
    return root


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- this machine ------------------------------------------------------------------------------------------------


def _row(out: str, label: str) -> str:
    """The value printed for ``label`` in the text report."""
    m = re.search(r"^  " + re.escape(label) + r" {2,}(.*)$", out, re.MULTILINE)
    assert m, f"no '{label}' row in:\n{out}"
    return m.group(1)


@cpu_machine
def test_reports_this_cpu_machine(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert _row(out, "GPU") == "none detected"
    assert _row(out, "Jetson") == "no"
    assert "CPUExecutionProvider" in _row(out, "onnxruntime")
    assert _row(out, "ONNX Runtime inference").startswith("CPU")
    if REAL_FIND_SPEC("tensorrt") is None:
        assert _row(out, "tensorrt") == "not installed"
        assert _row(out, "TensorRT engine build") == "no (TensorRT not installed)"
        assert "pip install 'lightseg-edge[trt]'" in out
    if REAL_FIND_SPEC("torch") is not None:
        import torch

        assert _row(out, "torch") == f"{torch.__version__}  CUDA not available (CPU-only build)"


def test_json_matches_the_installed_packages(capsys):
    report = _run_json(capsys)
    assert report["schema"] == "lightseg-environment/1"
    assert report["deep"] is True
    assert isinstance(report["hints"], list) and all(set(h) == {"component", "problem", "fix", "useful_here"} for h in report["hints"])
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert report["cpu"]["logical_cores"] == os.cpu_count()

    import onnxruntime

    assert report["onnxruntime"]["status"] == "ok"
    assert report["onnxruntime"]["version"] == onnxruntime.__version__
    assert report["onnxruntime"]["providers"] == onnxruntime.get_available_providers()
    assert "CPUExecutionProvider" in report["onnxruntime"]["providers"]

    trt_installed = REAL_FIND_SPEC("tensorrt") is not None
    assert (report["tensorrt"]["status"] != "missing") == trt_installed
    if REAL_FIND_SPEC("torch") is not None:
        import torch

        assert report["torch"]["version"] == torch.__version__
        assert report["torch"]["cuda_available"] == torch.cuda.is_available()
        assert report["torch"]["build_cuda"] == torch.version.cuda


@cpu_machine
def test_json_on_this_cpu_machine(capsys):
    report = _run_json(capsys)
    assert report["gpu"]["present"] is False and report["gpu"]["devices"] == []
    assert report["jetson"]["detected"] is False
    assert report["tensorrt"]["can_build"] is None  # never attempted without a GPU
    assert report["capabilities"]["ONNX Runtime inference"].startswith("CPU")


def test_fast_probe_imports_neither_torch_nor_tensorrt():
    code = (
        "import sys, json\n"
        "from lightseg_edge.bench.environment import collect_environment\n"
        "env = collect_environment()\n"
        "json.dumps(env)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'tensorrt': 'tensorrt' in sys.modules, 'status': env['torch']['status']}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code], check=False, cwd=root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["torch"] is False and seen["tensorrt"] is False
    if REAL_FIND_SPEC("torch") is not None:
        assert seen["status"] == "ok"  # version read from metadata, not by importing


# --- missing and broken packages -----------------------------------------------------------------------------------


def test_missing_packages_get_install_hints(monkeypatch, capsys, bare_root):
    _hide(monkeypatch, "onnxruntime", "onnxslim", "tensorrt", "pynvml")
    report = _run_json(capsys, "--fast")
    assert report["onnxruntime"]["status"] == "missing"
    assert report["packages"]["onnxslim"]["status"] == "missing"
    assert _hint(report, "onnxruntime")["fix"] == f"pip install 'lightseg-edge[{_EXTRAS['onnxruntime'][0]}]'"
    assert _hint(report, "onnxslim")["fix"] == f"pip install 'lightseg-edge[{_EXTRAS['onnxslim'][0]}]'"
    assert _hint(report, "tensorrt")["fix"].startswith("pip install 'lightseg-edge[trt]'")
    assert _hint(report, "nvidia-ml-py")["fix"].startswith("pip install 'lightseg-edge[gpu]'")
    assert report["capabilities"]["ONNX Runtime inference"] == "no (onnxruntime missing)"

    gpu = report["gpu"]["present"]
    assert _hint(report, "onnxruntime")["useful_here"] and _hint(report, "tensorrt")["useful_here"] == gpu

    assert main(["--fast"]) == 0
    out = capsys.readouterr().out
    useful, _, elsewhere = out.partition("For a GPU target, not useful here")
    assert "To install / fix (useful on this machine):" in useful
    assert f"pip install 'lightseg-edge[{_EXTRAS['onnxruntime'][0]}]'" in useful
    assert ("lightseg-edge[trt]" in useful) == gpu and ("tensorrt: pip install 'lightseg-edge[trt]'" in elsewhere) == (not gpu)


def test_no_hints_for_what_is_installed(monkeypatch, capsys, bare_root):
    report = _run_json(capsys, "--fast")
    components = {h["component"] for h in report["hints"]}
    if REAL_FIND_SPEC("onnxruntime") is not None:
        assert "onnxruntime" not in components or "CUDA" in _hint(report, "onnxruntime")["problem"]
    if REAL_FIND_SPEC("onnxslim") is not None:
        assert "onnxslim" not in components


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """Write a package on sys.path that shadows a real one; it is dropped from sys.modules afterwards."""
    written = []

    def make(name: str, source: str) -> None:
        pkg = tmp_path / "site" / name
        _write(pkg / "__init__.py", textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        monkeypatch.delitem(sys.modules, name, raising=False)
        written.append(name)

    yield make
    for name in written:
        sys.modules.pop(name, None)


def test_broken_tensorrt_is_reported_not_raised(fake_package, capsys, bare_root):
    fake_package("tensorrt", 'raise OSError("libnvinfer.so.10: cannot open shared object file: No such file or directory")\n')
    report = _run_json(capsys)
    trt = report["tensorrt"]
    assert trt["status"] == "broken"
    assert "OSError" in trt["error"] and "libnvinfer.so.10" in trt["error"]
    assert trt["can_build"] is None
    assert "does not import" in _hint(report, "tensorrt")["problem"]

    assert main([]) == 0
    assert "BROKEN: OSError: libnvinfer.so.10" in capsys.readouterr().out


FAKE_TRT = """
__version__ = "10.3.0"
BUILDERS = []

class Logger:
    ERROR = 1
    def __init__(self, severity=None):
        self.severity = severity

class NetworkDefinitionCreationFlag:
    STRONGLY_TYPED = 1

class BuilderFlag:
    FP16 = 0

class Builder:
    def __init__(self, logger):
        BUILDERS.append(logger)
"""


def test_tensorrt_builder_is_tried_only_with_a_gpu(fake_package, bare_root, monkeypatch):
    fake_package("tensorrt", FAKE_TRT)
    if not _nvidia_hardware():
        env = collect_environment(deep=True)
        assert env["tensorrt"]["status"] == "ok" and env["tensorrt"]["version"] == "10.3.0"
        assert env["tensorrt"]["build_check"] == "skipped: no GPU" and env["tensorrt"]["can_build"] is None
        assert sys.modules["tensorrt"].BUILDERS == []
        assert env["tensorrt"]["features"] == {"strongly_typed": True, "builder_fp16_flag": True, "int8_calibrator": False}

    # A desktop driver exposes the GPU in /proc even when torch and NVML cannot see it.
    _write(
        bare_root / "proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n",
    )
    _write(bare_root / "proc/driver/nvidia/gpus/0000:01:00.0/information", "Model: \t\t NVIDIA GeForce RTX 4090\nIRQ:   \t\t 16\n")
    env = collect_environment(deep=True)
    assert env["gpu"]["present"] is True
    if env["gpu"]["source"] == "driver":
        assert env["gpu"]["devices"][0]["name"] == "NVIDIA GeForce RTX 4090"
        assert env["gpu"]["driver"] == "550.54.14"
    assert env["tensorrt"]["can_build"] is True and env["tensorrt"]["build_check"] == "builder created"
    assert len(sys.modules["tensorrt"].BUILDERS) == 1


def test_tensorrt_builder_failure_is_reported(fake_package, bare_root):
    fake_package(
        "tensorrt", FAKE_TRT.replace("BUILDERS.append(logger)", 'raise RuntimeError("CUDA initialization failure with error: 35")')
    )
    _write(bare_root / "proc/driver/nvidia/gpus/0000:01:00.0/information", "Model: NVIDIA A100-SXM4-40GB\n")
    from lightseg_edge.cli.doctor import capabilities, install_hints

    env = collect_environment(deep=True)
    assert env["tensorrt"]["can_build"] is False
    assert "CUDA initialization failure" in env["tensorrt"]["build_check"]
    assert any(h["component"] == "tensorrt" and "cannot create a builder" in h["problem"] for h in install_hints(env))
    assert dict(capabilities(env))["TensorRT engine build"].startswith("no (RuntimeError")


# --- Jetson ------------------------------------------------------------------------------------------------------

JP5_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
JP6_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"


def _dpkg(**packages: str) -> str:
    stanzas = ["Package: libc6\nStatus: install ok installed\nVersion: 2.31-0ubuntu9\n"]
    for name, version in packages.items():
        stanzas.append(f"Package: {name.replace('_', '-')}\nStatus: install ok installed\nArchitecture: arm64\nVersion: {version}\n")
    return "\n".join(stanzas)


@pytest.mark.parametrize(
    "release, model, dpkg, want",
    [
        (
            JP5_RELEASE,
            "NVIDIA Jetson AGX Orin Developer Kit\x00",
            _dpkg(nvidia_jetpack="5.1.2-b104", nvidia_l4t_core="35.4.1-20230801124926"),
            {"l4t": "35.4.1", "jetpack": "5.1.2", "jetpack_source": "dpkg", "python": "3.8", "tensorrt": "8.5.2"},
        ),
        (
            JP6_RELEASE,
            "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00",
            None,
            {"l4t": "36.4.3", "jetpack": "6.1/6.2", "jetpack_source": "l4t", "python": "3.10", "tensorrt": "10.3"},
        ),
        (  # an L4T container: no /etc/nv_tegra_release, but the l4t-core package is recorded
            None,
            None,
            _dpkg(nvidia_l4t_core="36.3.0-20240506102626"),
            {"l4t": "36.3.0", "jetpack": "6.0", "jetpack_source": "l4t", "python": "3.10", "tensorrt": "8.6.x"},
        ),
    ],
    ids=["jp5-orin-dpkg", "jp6-orin-nano-l4t-only", "l4t-container"],
)
def test_jetson_is_detected(monkeypatch, capsys, bare_root, release, model, dpkg, want):
    if release:
        _write(bare_root / "etc/nv_tegra_release", release)
    if model:
        _write(bare_root / "proc/device-tree/model", model)
    if dpkg:
        _write(bare_root / "var/lib/dpkg/status", dpkg)
    _write(bare_root / "usr/bin/tegrastats", "#!/bin/sh\n")
    os.chmod(bare_root / "usr/bin/tegrastats", 0o755)
    _hide(monkeypatch, "tensorrt", "onnxruntime", "pynvml")

    report = _run_json(capsys, "--fast")
    jet = report["jetson"]
    assert jet["detected"] is True
    assert jet["model"] == (model.strip("\x00") if model else None)
    assert jet["l4t"] == want["l4t"]
    assert (jet["jetpack"], jet["jetpack_source"]) == (want["jetpack"], want["jetpack_source"])
    assert jet["expected"]["python"] == want["python"] and jet["expected"]["tensorrt"] == want["tensorrt"]
    assert report["gpu"]["present"] is True
    assert report["tools"]["tegrastats"] == str(bare_root / "usr/bin/tegrastats")

    trt_fix = _hint(report, "tensorrt")["fix"]
    assert "comes with JetPack" in trt_fix and "python3-libnvinfer" in trt_fix
    assert "lightseg-edge[trt]" not in trt_fix  # pip's aarch64 TensorRT wheels do not run on JetPack 5/6
    assert "Jetson AI Lab" in _hint(report, "onnxruntime")["fix"]
    assert "nvidia-ml-py" not in {h["component"] for h in report["hints"]}  # NVML is not usable on Jetson
    py_hints = [h for h in report["hints"] if h["component"] == "python"]
    if "{}.{}".format(*sys.version_info[:2]) != want["python"]:
        assert py_hints and f"system python{want['python']}" in py_hints[0]["fix"]

    assert main(["--fast"]) == 0
    out = capsys.readouterr().out
    jetson_line = next(line for line in out.splitlines() if line.strip().startswith("Jetson "))
    assert f"L4T {want['l4t']}" in jetson_line and f"JetPack {want['jetpack']}" in jetson_line


def test_jetson_venv_without_system_site_packages_is_flagged(monkeypatch, capsys, bare_root, tmp_path):
    _write(bare_root / "etc/nv_tegra_release", JP6_RELEASE)
    venv = tmp_path / "venv"
    _write(venv / "pyvenv.cfg", "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.10.12\n")
    monkeypatch.setattr(sys, "prefix", str(venv))
    _hide(monkeypatch, "tensorrt")
    report = _run_json(capsys, "--fast")
    assert report["python"]["venv"] is True and report["python"]["system_site_packages"] is False
    assert "--system-site-packages" in _hint(report, "tensorrt")["fix"]

    _write(venv / "pyvenv.cfg", "home = /usr/bin\ninclude-system-site-packages = true\n")
    report = _run_json(capsys, "--fast")
    assert report["python"]["system_site_packages"] is True
    assert "--system-site-packages" not in _hint(report, "tensorrt")["fix"]


@pytest.mark.parametrize("cpuinfo, isa", [
    ("model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n\nmodel name\t: AMD EPYC\nflags\t\t: avx512f\n", ["AVX2"]),
    ("model name\t: Xeon\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_tile\n", ["AVX2", "AVX-512", "AVX512-VNNI", "AVX512-BF16", "AMX"]),
    ("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm bf16\nCPU part\t: 0xd0c\n", ["NEON", "dotprod", "i8mm", "BF16"]),
    ("model name\t: old\n", []),
])
def test_the_cpus_vector_extensions_are_named(capsys, bare_root, cpuinfo, isa):
    """They decide which runtime and precision are fastest, so every benchmark header and CPU default names them."""
    _write(bare_root / "proc/cpuinfo", cpuinfo)
    report = _run_json(capsys, "--fast")
    assert report["cpu"]["vector_isa"] == isa
    assert main(["--fast"]) == 0
    assert _row(capsys.readouterr().out, "CPU").startswith(f"{report['cpu']['model']} ({', '.join(isa)})" if isa else report["cpu"]["model"])


def test_other_arm_boards_are_not_jetsons(capsys, bare_root):
    _write(bare_root / "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00")
    report = _run_json(capsys, "--fast")
    assert report["jetson"]["detected"] is False and report["jetson"]["model"] is None


@pytest.mark.parametrize(
    "text, l4t",
    [
        (JP5_RELEASE, "35.4.1"),
        (JP6_RELEASE, "36.4.3"),
        ("# R32 (release), REVISION: 7.1, GCID: 29818004", "32.7.1"),
        ("garbage", None),
        ("", None),
    ],
)
def test_parse_l4t_release(text, l4t):
    assert parse_l4t_release(text) == l4t


@pytest.mark.parametrize(
    "l4t, jetpack",
    [
        ("35.1.0", "5.0.2"),
        ("35.4.1", "5.1.x"),
        ("35.6.0", "5.1.x"),
        ("36.3.0", "6.0"),
        ("36.4.7", "6.1/6.2"),
        ("38.2.0", "7.0"),
        ("38.4.0", "7.1"),
        ("39.2.0", "7.2"),
        ("32.7.1", "4.x"),
        ("36.2.0", None),
        ("40.0", None),
        (None, None),
    ],
)
def test_jetpack_for_l4t(l4t, jetpack):
    got = jetpack_for_l4t(l4t)
    assert (got["jetpack"] if got else None) == jetpack


def test_dpkg_ignores_removed_packages(tmp_path):
    status = tmp_path / "status"
    status.write_text(
        "Package: nvidia-jetpack\nStatus: deinstall ok config-files\nVersion: 5.1.1-b56\n\n"
        "Package: nvidia-l4t-core\nStatus: install ok installed\nVersion: 35.4.1-20230801124926\n"
    )
    assert environment._dpkg_versions(str(status), ("nvidia-jetpack", "nvidia-l4t-core")) == {"nvidia-l4t-core": "35.4.1-20230801124926"}


def test_unreadable_files_do_not_crash(tmp_path):
    root = tmp_path / "root"
    (root / "etc/nv_tegra_release").mkdir(parents=True)  # a directory where a file is expected
    env = collect_environment(paths=ProbePaths.under(root))
    assert env["jetson"]["detected"] is False
    json.dumps(env)
