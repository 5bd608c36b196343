#!/usr/bin/env bash
# lightseg-serve beside NumPy 2 (docs/serving.md). nvidia-pytriton declares numpy<2, which the rest of
# lightseg-edge[all] does not take, so it is installed without its pins, its other requirements as usual, and the
# Triton Python-backend stub (built against NumPy 1) gets a private NumPy 1.x in the folder lightseg-serve starts it in.
# In an environment that is NumPy 1 anyway, `pip install 'lightseg-edge[serve]'` is enough.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-deps "nvidia-pytriton>=0.7,<0.8"
python3 -m pip install -q -c constraints.txt "tritonclient[grpc,http]>=2.50" "pyzmq>=23" "sh>=1.14" "typing_inspect>=0.6" \
    "wrapt>=1.11" "typer>=0.9" "importlib_metadata>=7.0.1" "numpy>=2"
python3 -m pip install -q --no-deps --target "${LIGHTSEG_TRITON_STUB_SITE:-${XDG_CACHE_HOME:-$HOME/.cache}/lightseg-edge/triton-stub-site}" "numpy<2"
