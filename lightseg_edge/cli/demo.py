"""lightseg-demo: a local web page to try the models on a dermoscopy image (needs the ``demo`` extra: Gradio).

Drop, pick or photograph (webcam) an image, choose the model, runtime and precision, and see the lesion overlay,
the probability map, the lesion area and the latency split (pre-processing, inference, post-processing); the
"Side by side" tab runs two models or two precisions on the same image with their agreement Dice.

SOURCEs are export folders, .onnx / .plan files, checkpoints or registry model names; without any, every model
with shipped weights is offered. The page binds to 127.0.0.1 (this machine only); --host 0.0.0.0 exposes it to the
network, without authentication. Not a diagnostic device.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import List, Optional

from ._common import positive_int, probability, run_cli


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    from ..demo.app import DEFAULT_HOST, DEFAULT_PORT

    p = argparse.ArgumentParser(prog="lightseg-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="export folder, .onnx, .plan/.engine, checkpoint or registry model name (default: every model with shipped weights)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to bind (default: %(default)s, this machine only; 0.0.0.0 exposes the page to the network)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help="TCP port (default: %(default)s)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the best available for each runtime)")
    p.add_argument("--threshold", type=probability, default=0.5, help="the page's initial probability threshold (default: %(default)s)")
    p.add_argument("--max-pixels", type=positive_int,
                   help="refuse uploads whose header announces more pixels (default: $LIGHTSEG_MAX_IMAGE_PIXELS or 100,000,000)")
    p.add_argument("--no-warmup", action="store_true", help="do not load the first model before serving")
    return p


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _body(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    from ..demo.app import DemoState, import_gradio, serve
    from ..demo.sources import PredictorCache, discover

    import_gradio()  # a missing extra is one line before anything loads
    options = discover(args.sources, args.device)
    state = DemoState(options, PredictorCache(device=args.device), threshold=args.threshold, max_pixels=args.max_pixels)
    if not args.no_warmup:
        first = options[0]
        rt = first.runtime_names[0]
        _, seconds = state.cache.get(first.source, rt, first.precisions(rt)[0])
        print(f"loaded {first.label} ({rt}, {first.precisions(rt)[0]}) in {seconds:.2f} s", flush=True)

    stop = threading.Event()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    server = None
    try:
        server = serve(state, host=args.host, port=args.port)
        print(f"lightseg-demo: serving {', '.join(o.label for o in options)} on {server.url}", flush=True)
        if not _loopback(args.host):
            print(f"warning: bound to {args.host}: anyone who can reach this machine can use the page (no authentication)",
                  file=sys.stderr, flush=True)
        print("not a diagnostic device; Ctrl-C stops the demo", flush=True)
        while not stop.wait(0.5):  # signal handlers run in this (the main) thread, between waits
            pass
    finally:
        if server is not None:
            server.close()
        else:
            state.cache.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("lightseg-demo: stopped", flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_body, argv)


if __name__ == "__main__":
    sys.exit(main())
