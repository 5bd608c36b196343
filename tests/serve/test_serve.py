"""lightseg-serve through a real Triton server (PyTriton's bundled tritonserver, Python backend) and the
lightseg-bench --triton sweep against it. Skipped, with the reason, where PyTriton or tritonclient is not installed."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="NVIDIA PyTriton is not installed (pip install 'lightseg-edge[serve]')")
http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (pip install 'lightseg-edge[serve]')")

from lightseg_edge.errors import MissingDependencyError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120
MODEL = "lightseg"


def _free_ports(n: int):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from lightseg_edge.serve.triton_server import stub_workdir

    try:
        stub_workdir()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    http_port, grpc_port, metrics_port = _free_ports(3)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "lightseg_edge.cli.serve", "ucmnet", "--runtime", "pytorch", "--device", "cpu",
           "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
           "--max-batch-size", "8", "--queue-delay-us", "5000", "--tta", "flips"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{http_port}"
    client = http.InferenceServerClient(url)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"lightseg-serve exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if client.is_model_ready(MODEL):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"lightseg-serve not ready within {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "client": client, "proc": proc, "log": log}
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # what a service manager sends: a clean stop, exit status 0
            try:
                rc = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail("lightseg-serve did not stop within 60 s of SIGTERM")
            text = log.read_text(errors="replace")
            assert rc == 0 and "stopped" in text, text[-2000:]
            triton_logs = re.findall(r"Triton's log: (\S+)", text)
            assert triton_logs and not any(Path(p).parent.exists() for p in triton_logs)  # a clean stop leaves nothing


def _infer(client, x: np.ndarray, datatype: str = "UINT8", proba: bool = False):
    inp = http.InferInput("IMAGE", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    outputs = [http.InferRequestedOutput("MASK")] + ([http.InferRequestedOutput("PROBABILITY")] if proba else [])
    return client.infer(MODEL, [inp], outputs=outputs)


def _images(sample_dir):
    from lightseg_edge.data.io import read_image

    files = sorted((sample_dir / "images").glob("*.jpg"))
    assert len(files) == 8
    return [read_image(f) for f in files]


def test_masks_identical_to_local_predictor(server, sample_dir):
    """The server runs with --tta flips: its masks are those of a local predictor with the same option (a plain one's
    differ on these images, so an option lost on the way would show)."""
    from lightseg_edge.runtimes import load_predictor

    images = _images(sample_dir)
    deadline = time.monotonic() + 30  # the start-up line may follow Triton's readiness by a moment
    while "on cpu, TTA flips" not in server["log"].read_text(errors="replace"):
        assert time.monotonic() < deadline, server["log"].read_text(errors="replace")[-2000:]
        time.sleep(0.2)
    with load_predictor("ucmnet", runtime="pytorch", device="cpu", tta="flips") as local:
        expected = [local.predict(im) for im in images]
        expected_proba = local.predict_proba(images[0])
    for im, want in zip(images, expected):  # one request at a time: every batch Triton forms has one image
        got = _infer(server["client"], im[None]).as_numpy("MASK")
        assert got.dtype == np.uint8 and got.shape == (1,) + im.shape[:2]
        np.testing.assert_array_equal(got[0], want)
    res = _infer(server["client"], images[0][None], proba=True)
    proba = res.as_numpy("PROBABILITY")
    assert proba.dtype == np.float32 and proba.shape == (1,) + images[0].shape[:2]
    np.testing.assert_allclose(proba[0], expected_proba, atol=1e-5)


@pytest.mark.parametrize("kind", ["float32", "rank2", "empty", "oversized"])
def test_bad_requests_get_an_error_and_the_server_keeps_serving(server, sample_dir, kind):
    from tritonclient.utils import InferenceServerException

    good = _images(sample_dir)[0]
    bad, datatype = {
        "float32": (good[None].astype(np.float32), "FP32"),
        "rank2": (good[None, :, :, 0].copy(), "UINT8"),
        "empty": (np.zeros((1, 0, 0, 3), np.uint8), "UINT8"),
        "oversized": (np.zeros((1, 8193, 2, 3), np.uint8), "UINT8"),
    }[kind]
    with pytest.raises(InferenceServerException) as info:
        _infer(server["client"], bad, datatype)
    if kind == "oversized":
        assert "8192" in str(info.value)
    if kind == "empty":  # reaches lightseg's own check (PyTriton alone fails on a zero-size tensor with a TypeError)
        assert "IMAGE is empty (0x0)" in str(info.value)
    if kind == "float32":
        assert "UINT8" in str(info.value)
    assert server["proc"].poll() is None
    assert _infer(server["client"], good[None]).as_numpy("MASK").shape == (1,) + good.shape[:2]


def test_bench_triton_sweep(server, sample_dir, tmp_path, capsys):
    import json

    from lightseg_edge.cli.bench import main

    out = tmp_path / "sweep.json"
    rc = main(["--triton", server["url"], "--data", str(sample_dir), "--concurrency", "1,2", "--requests", "8",
               "--json", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    report = json.loads(out.read_text())
    assert [lv["concurrency"] for lv in report["levels"]] == [1, 2]
    for lv in report["levels"]:
        assert lv["requests"] == 8 and lv["errors"] == 0 and lv["images_per_s"] > 0
        assert sum(b * n for b, n in ((int(k), v) for k, v in lv["batch_sizes"].items())) == 8
    rows = [line.split() for line in text.splitlines() if line.split() and line.split()[0] in ("1", "2")]
    assert [r[0] for r in rows] == ["1", "2"]


def test_cli_bad_argument_exit_2_one_line():
    r = subprocess.run([sys.executable, "-m", "lightseg_edge.cli.serve", "ucmnet", "--http-port", "8000", "--grpc-port", "8000"],
                       cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "must differ" in lines[0]
    r = subprocess.run([sys.executable, "-m", "lightseg_edge.cli.serve", "ucmnet", "--http-port", "70000"],
                       cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "port number" in r.stderr


def test_bench_triton_no_server_is_a_clear_error(sample_dir, capsys):
    from lightseg_edge.cli.bench import main

    (port,) = _free_ports(1)
    rc = main(["--triton", f"127.0.0.1:{port}", "--data", str(sample_dir), "--requests", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "no Triton server answers" in err and len(err.strip().splitlines()) == 1


def test_images_of_different_sizes_in_flight_together(server, sample_dir):
    """Concurrent requests with images of several sizes: Triton may batch them (ragged IMAGE input); each answer has
    its own image's size and agrees with the local predictor."""
    import threading

    from lightseg_edge.runtimes import load_predictor

    import cv2

    base = _images(sample_dir)
    sizes = [(192, 192), (300, 200), (97, 151), (480, 640)]
    images = [cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im, (h, w) in zip(base, sizes * 2)]
    with load_predictor("ucmnet", runtime="pytorch", device="cpu", tta="flips") as local:  # as the server runs
        expected = [local.predict(im) for im in images]
    results, errors = {}, []

    def worker(k: int) -> None:
        client = http.InferenceServerClient(server["url"])  # tritonclient.http: one client per thread
        try:
            for _ in range(3):
                results[k] = _infer(client, images[k][None]).as_numpy("MASK")[0]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for k, want in enumerate(expected):
        assert results[k].shape == want.shape
        assert (results[k] == want).mean() > 0.999  # batched vs single-image float paths may flip a border pixel


def test_an_invalid_request_names_itself_to_its_batch_mates():
    """PyTriton fails a whole batch with one error: a valid request batched with an invalid one is told why and
    that it can be sent again; nothing is run."""
    from pytriton.exceptions import PyTritonBadParameterError

    from lightseg_edge.serve.triton_server import make_infer_func

    class Refuses:
        def predict_batch(self, images, threshold=None):
            raise AssertionError("a batch holding an invalid request must not be run")

    infer = make_infer_func(Refuses())
    good, empty = np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 0, 0, 3), np.uint8)
    with pytest.raises(PyTritonBadParameterError) as info:
        infer([{"IMAGE": good}, {"IMAGE": empty}])
    assert "IMAGE is empty (0x0)" in str(info.value) and "2 requests" in str(info.value)
    with pytest.raises(PyTritonBadParameterError) as info:
        infer([{"IMAGE": empty}])
    assert "none was run" not in str(info.value)
