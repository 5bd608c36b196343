"""The firmware guarantee: the runtime layer, ONNX predictors, the TensorRT error paths, lightseg-predict on an ONNX
export and the firmware example all work in a process where torch cannot be imported at all.

Each check runs in a fresh interpreter with an import hook that makes ``import torch`` fail (as on a device that ships
numpy + onnxruntime only), and then also asserts that no ``torch`` module is in ``sys.modules``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCK_TORCH = textwrap.dedent("""
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test (firmware image without torch)")
            return None
    sys.meta_path.insert(0, _NoTorch())
""")

CHECK = textwrap.dedent("""
    leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    assert not leaked, leaked
    print("NO-TORCH-OK")
""")


def _run(body: str, tmp_path: Path, args=()) -> subprocess.CompletedProcess:
    script = tmp_path / "check.py"
    script.write_text(BLOCK_TORCH + textwrap.dedent(body) + CHECK)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, str(script), *map(str, args)], check=False, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert res.returncode == 0 and "NO-TORCH-OK" in res.stdout, f"stdout:\n{res.stdout}\nstderr:\n{res.stderr[-3000:]}"
    return res


def test_import_runtimes_imports_no_torch(tmp_path):
    _run("""
        import lightseg_edge
        import lightseg_edge.runtimes as rt
        from lightseg_edge.runtimes import load_predictor, Predictor, BasePredictor, draw_contours
        rt.OnnxRuntimePredictor, rt.TensorRTPredictor, rt.PyTorchPredictor  # the classes resolve lazily, torch-free
        import lightseg_edge.runtimes.tensorrt_backend, lightseg_edge.runtimes.pytorch_backend
    """, tmp_path)


def test_onnx_predictors_run_without_torch(export_dir, sample_dir, tmp_path):
    img = min((sample_dir / "images").iterdir())
    _run("""
        import numpy as np
        from lightseg_edge.data.io import read_image
        from lightseg_edge.runtimes import load_predictor, draw_contours
        export_dir, image = sys.argv[1], sys.argv[2]
        rgb = read_image(image)
        for precision in ("fp32", "fp16", "int8"):
            with load_predictor(export_dir, precision=precision) as p:
                mask = p.predict(rgb)
                assert mask.shape == rgb.shape[:2] and set(np.unique(mask)) <= {0, 1}
                assert p.predict_proba(rgb).dtype == np.float32
        with load_predictor(export_dir + "/model.onnx", runtime="onnxruntime", threads=1) as p:  # manifest beside it
            p.predict_batch([rgb, rgb])
            draw_contours(rgb, p.predict(rgb))
    """, tmp_path, args=(export_dir, img))


def test_tensorrt_error_paths_import_no_torch(export_dir, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\\x00" * 64)
    _run("""
        from lightseg_edge.errors import EngineError, LightsegError
        from lightseg_edge.runtimes import load_predictor
        from lightseg_edge.runtimes.tensorrt_backend import choose_buffer_provider
        try:
            load_predictor(sys.argv[1], preprocess={"size": [256, 256], "mode": "minmax"})
        except LightsegError as exc:  # MissingDependencyError without tensorrt, EngineError with it
            print("refused:", exc)
        else:
            raise AssertionError("a 64-byte engine was accepted")
        empty = sys.argv[1] + ".empty.plan"
        open(empty, "wb").close()
        try:
            load_predictor(empty, preprocess={"size": [256, 256], "mode": "minmax"})
        except EngineError as exc:
            print("refused:", exc)
        try:
            choose_buffer_provider()
        except LightsegError:
            pass
    """, tmp_path, args=(plan,))


def test_predict_cli_and_firmware_example_without_torch(export_dir, sample_dir, tmp_path):
    app = ROOT / "examples" / "firmware_app.py"
    res = _run("""
        import runpy
        from lightseg_edge.cli.predict import main
        export_dir, images, out, app = sys.argv[1:5]
        assert main([export_dir, images, "--out", out, "--overlay", "--no-progress"]) == 0
        sys.argv = [app, export_dir, images, "--max-frames", "3", "--report-every", "2"]
        try:
            runpy.run_path(app, run_name="__main__")
        except SystemExit as exc:
            assert exc.code == 0, exc.code
    """, tmp_path, args=(export_dir, sample_dir / "images", tmp_path / "out", app))
    assert "done: 3 frames" in res.stdout
    n_images = len(list((sample_dir / "images").iterdir()))
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == n_images
    assert len(list((tmp_path / "out").glob("*_overlay.png"))) == n_images
