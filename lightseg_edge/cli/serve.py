"""lightseg-serve: serve a model through a real Triton Inference Server (NVIDIA PyTriton) on this machine.

SOURCE is anything lightseg-predict takes: a registry model name (ucmnet), a lightseg-export folder, an .onnx file or a
TensorRT .plan. The model is loaded once with the chosen runtime; Triton handles HTTP/gRPC, dynamic batching (requests
waiting up to --queue-delay-us are run together, whatever their image sizes), statistics and Prometheus metrics.

Served model (default name 'lightseg'): input IMAGE uint8 [H, W, 3] per request item; outputs MASK uint8 [H, W] (0/1)
and PROBABILITY float32 [H, W] (computed only when requested). Binds 127.0.0.1 unless --host says otherwise.
Ctrl-C or SIGTERM stops the server cleanly.

examples:
  lightseg-serve ucmnet
  lightseg-serve exports/ucmnet-256-fp32/model.onnx --http-port 9000 --grpc-port 9001 --metrics-port 9002
  lightseg-serve exports/ucmnet-256-fp16 --runtime tensorrt --device cuda --max-batch-size 16
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import List, Optional

from ..runtimes.registry import alias_table, known_suffixes, runtime_names
from ..types import PRECISION_NAMES, TTA
from ._common import _number, add_tta_argument, non_negative_int, probability, run_cli

port_number = _number(int, 0, False, "a port number in 1..65535", high=65535)
serve_batch = _number(int, 0, False, "a positive integer up to 256", high=256)


def _host(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"expected a host name or IP address, got {text!r}")
    return text


def _parser() -> argparse.ArgumentParser:
    from ..serve.triton_server import DEFAULT_MODEL_NAME, DEFAULT_QUEUE_DELAY_US

    p = argparse.ArgumentParser(prog="lightseg-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="export folder, model file (" + ", ".join(known_suffixes()) + ") or registry model name")
    p.add_argument("--runtime", default="auto", choices=("auto",) + tuple(alias_table()), metavar="RUNTIME",
                   help="auto (from the source), or one of " + ", ".join(runtime_names()) + " (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISION_NAMES, help="which export artifact to run (default: the export's own)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the best available for the runtime)")
    p.add_argument("--model", help="registry model name, for checkpoints that do not record it")
    p.add_argument("--threshold", type=probability, help="probability threshold for MASK (default: the predictor's, 0.5)")
    add_tta_argument(p)
    p.add_argument("--host", type=_host, default="127.0.0.1", help="address to bind (default: %(default)s; 0.0.0.0 exposes it to the network)")
    p.add_argument("--http-port", type=port_number, default=8000, help="HTTP port (default: %(default)s)")
    p.add_argument("--grpc-port", type=port_number, default=8001, help="gRPC port (default: %(default)s)")
    p.add_argument("--metrics-port", type=port_number, default=8002, help="Prometheus metrics port (default: %(default)s)")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="name of the served Triton model (default: %(default)s)")
    p.add_argument("--max-batch-size", type=serve_batch, default=8, help="largest batch Triton's dynamic batcher forms (default: %(default)s)")
    p.add_argument("--queue-delay-us", type=non_negative_int, default=DEFAULT_QUEUE_DELAY_US,
                   help="how long a request may wait for others to batch with, in microseconds (default: %(default)s)")
    p.add_argument("--verbose", action="store_true", help="Triton's own log lines too")
    return p


def _check(args: argparse.Namespace) -> None:
    from ..errors import InvalidInputError

    ports = {"--http-port": args.http_port, "--grpc-port": args.grpc_port, "--metrics-port": args.metrics_port}
    if len(set(ports.values())) < 3:
        raise InvalidInputError("--http-port, --grpc-port and --metrics-port must differ, got " + ", ".join(f"{k} {v}" for k, v in ports.items()))
    if not args.model_name.replace("_", "").replace("-", "").isalnum():
        raise InvalidInputError(f"--model-name {args.model_name!r}: expected letters, digits, '-' and '_' only")
    try:
        ipaddress.ip_address(args.host)
    except ValueError:
        if args.host != "localhost" and not all(part.replace("-", "").isalnum() for part in args.host.split(".")):
            raise InvalidInputError(f"--host {args.host!r}: expected an IP address or host name") from None


def _run(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    _check(args)
    from .._optional import require

    require("pytriton", extra="serve", purpose="lightseg-serve (NVIDIA PyTriton)")
    from ..runtimes import load_predictor
    from ..serve.triton_server import ServeConfig, check_ports_free, serve, stub_workdir

    stub_workdir()  # a missing NumPy 1.x for the backend, or a busy port, is said before the model loads
    check_ports_free(args.host, {"--http-port": args.http_port, "--grpc-port": args.grpc_port, "--metrics-port": args.metrics_port})
    options = {"tta": args.tta}
    if args.precision:
        options["precision"] = args.precision
    if args.model:
        options["model"] = args.model
    predictor = load_predictor(args.source, runtime=args.runtime, device=args.device, **options)
    cfg = ServeConfig(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                      model_name=args.model_name, max_batch_size=args.max_batch_size, queue_delay_us=args.queue_delay_us,
                      threshold=args.threshold, verbose=args.verbose)

    def ready(server) -> None:
        tta = "" if predictor.tta is TTA.NONE else f", TTA {predictor.tta.value}"
        print(f"{predictor.source}: {predictor.runtime.value} {predictor.precision.value} on {predictor.device}{tta}", flush=True)
        print(f"serving model '{cfg.model_name}' on http://{cfg.host}:{cfg.http_port} (gRPC {cfg.host}:{cfg.grpc_port}, "
              f"metrics http://{cfg.host}:{cfg.metrics_port}/metrics); Ctrl-C to stop", flush=True)
        if server.log_file is not None:
            print(f"Triton's log: {server.log_file}", flush=True)

    try:
        serve(predictor, cfg, ready=ready)
    finally:
        predictor.close()
    print("stopped", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
