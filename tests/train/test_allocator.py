"""lightseg-train keeps the memory it frees: in a fresh process, training steps soon take no page faults (under
glibc's defaults every step faults its large activations in again); elsewhere than glibc nothing is changed."""

import json
import platform
import statistics
import subprocess
import sys

import pytest

from lightseg_edge.train import allocator

_PROBE = """
import json, resource, sys
import torch
from lightseg_edge.train.allocator import keep_freed_memory
msg = keep_freed_memory() if sys.argv[1] == "keep" else "default"
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(32, 32, 3, padding=1),
                          torch.nn.GELU(), torch.nn.Conv2d(32, 1, 1))
x = torch.randn(4, 3, 256, 256)  # activations of 32 MiB
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x).square().mean().backward()
    net.zero_grad(set_to_none=True)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"msg": msg, "faults": faults}))
"""


def _probe(mode):
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_training_steps_reuse_their_memory_without_page_faults():
    keep, default = _probe("keep"), _probe("default")
    assert keep["msg"].startswith("memory: freed blocks stay in the process")
    assert min(default["faults"]) > 8192  # the control: glibc unmaps the activations on free; each step faults them in
    # after the first steps the heap holds what a step needs (a step may still extend it now and then)
    assert statistics.median(keep["faults"][-4:]) * 20 < statistics.median(default["faults"][-4:])


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("", ""))
    assert allocator.keep_freed_memory() == "memory: the C library's default allocator (not glibc)"
