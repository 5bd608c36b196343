"""CPU training speed: seconds per training image for each way of making CPU training affordable, side by side.

    python benchmarks/train_speed.py [--models lmsaunet,ucmnet] [--rounds 3] [--steps 2] [--pause-pid PID] [--out bench-results/]

For each model it times full training steps (forward_train, the recipe's loss with deep supervision, backward, the
recipe's optimiser step) on batches of real ISIC images, for these variants:

- ``fp32@256``: the reference (float32, 256x256);
- ``bf16@256``: ``torch.autocast(cpu, bfloat16)``, what ``lightseg-train --precision bf16`` does;
- ``fp32@128`` / ``bf16@128``: the early epochs of ``lightseg-train --progressive 128:N`` (batches area-downscaled);
- ``fp32@256 channels_last``: model and input in channels_last memory format;
- ``fp32@256 literal``, ``fp32@128 literal``: models whose training forward computes layers in a cheaper order than
  the released code (LMSAUnet's decoders squeeze before they upsample, and its ECDF cascades run both channel halves
  in one depthwise convolution) run in the released order instead, to show what the reordering saves;
  ``fp32@256 unpaired``, ``fp32@128 unpaired``: only the cascades in the released order (one convolution per half).
  Not in the default ``--variants``; for other models they are the plain variant;
- ``fp32@256 malloc-default``, ``fp32@128 malloc-default``: glibc's malloc as it comes, returning large freed blocks to
  the system, where every other variant keeps them for reuse as ``lightseg-train`` does
  (``lightseg_edge.train.allocator``), to show what that saves. Not in the default ``--variants``; the table's page
  faults and peak memory columns show what it costs and saves;
- ``fp32@256 compile``, ``bf16@256 compile``, ``bf16@128 compile``: ``torch.compile`` (inductor, default mode) of the model's training
  forward. Not in the default ``--variants`` (compiling takes minutes per process); the "first step" column shows
  what each process paid before its timed steps, compilation included, which every resumed run pays again.

It also times what the trainer's decoded-image cache saves: reading and resizing one ISIC JPEG (what an uncached
loader does per sample per epoch) against indexing the decoded array (what the trainer does).

Every (model, variant) measurement runs in a fresh process (one model, its optimiser, one untimed step, then
``--steps`` timed steps), so allocator and oneDNN primitive caches never carry over between variants. Measurements
are interleaved: every round runs each (model, variant) once, in forward order on odd rounds and reverse order on
even ones, so a change in machine load hits every variant alike.
A variant's figure is the median of its rounds; ratios are to ``fp32@256`` of the same model. The load average and
the CPU share other processes used are recorded per measurement. ``--pause-pid`` SIGSTOPs a background process
(e.g. a training run) while measuring and SIGCONTs it afterwards, even on error.

Writes ``train_speed.json`` and ``train_speed.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

VARIANTS = {
    "fp32@256": dict(size=256, bf16=False),
    "bf16@256": dict(size=256, bf16=True),
    "fp32@128": dict(size=128, bf16=False),
    "bf16@128": dict(size=128, bf16=True),
    "fp32@256 channels_last": dict(size=256, bf16=False, channels_last=True),
    "fp32@256 literal": dict(size=256, bf16=False, literal=True),
    "fp32@128 literal": dict(size=128, bf16=False, literal=True),
    "fp32@256 unpaired": dict(size=256, bf16=False, unpaired=True),
    "fp32@128 unpaired": dict(size=128, bf16=False, unpaired=True),
    "fp32@256 malloc-default": dict(size=256, bf16=False, malloc_default=True),
    "fp32@128 malloc-default": dict(size=128, bf16=False, malloc_default=True),
    "fp32@256 compile": dict(size=256, bf16=False, compile=True),
    "bf16@256 compile": dict(size=256, bf16=True, compile=True),
    "bf16@128 compile": dict(size=128, bf16=True, compile=True),
}
DEFAULT_VARIANTS = [v for v, how in VARIANTS.items() if not how.keys() & {"compile", "literal", "unpaired", "malloc_default"}]


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lmsaunet,lmsaunet_n32,ucmnet,egeunet,malunet,unext_s")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="timed steps per (model, variant) and round")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", help="dataset root (default: the shared ISIC 2018 copy, else the test sample)")
    p.add_argument("--pause-pid", type=int, help="SIGSTOP this process while measuring (SIGCONT afterwards)")
    p.add_argument("--out", default="bench-results")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)  # a child process's single measurement
    return p.parse_args(argv)


@contextlib.contextmanager
def _paused(pid: Optional[int]) -> Iterator[None]:
    if pid:
        os.kill(pid, signal.SIGSTOP)
        time.sleep(2)  # let its threads leave the cores
    try:
        yield
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)


@dataclass
class _Runner:
    """One model + optimiser in one variant, kept across rounds so only the first step of round 1 pays warm-up."""

    model_name: str
    variant: str

    def __post_init__(self) -> None:
        import torch

        from lightseg_edge.models import create_model
        from lightseg_edge.train.recipes import recipe_for
        from lightseg_edge.train.device import keep_dilated_convs_fp32
        from lightseg_edge.train.trainer import _optimizer
        from lightseg_edge.types import TrainPrecision

        torch.manual_seed(0)
        v = VARIANTS[self.variant]
        self.size, self.bf16, self.cl = v["size"], v["bf16"], v.get("channels_last", False)
        self.recipe = recipe_for(self.model_name)
        precision = TrainPrecision.BF16 if self.bf16 else TrainPrecision.FP32
        self.model = keep_dilated_convs_fp32(create_model(self.model_name).train(), torch.device("cpu"), precision)
        if self.cl:
            self.model = self.model.to(memory_format=torch.channels_last)
        for m in self.model.modules():  # the released order of each reordered layer
            if v.get("literal") and hasattr(m, "squeeze_first"):
                m.squeeze_first = False
            if (v.get("literal") or v.get("unpaired")) and hasattr(m, "pair_below"):
                m.pair_below = 0
        self.forward_train = torch.compile(self.model.forward_train) if v.get("compile") else self.model.forward_train
        self.opt = _optimizer(self.recipe.optimizer, self.model.parameters(), self.recipe.lr, self.recipe.weight_decay)

    def step(self, x, y) -> None:
        import torch

        from lightseg_edge.train.losses import LOSSES, group_loss
        from lightseg_edge.train.trainer import downscale

        x, y = downscale(x, y, self.size)
        if self.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            final, stages = self.forward_train(x)
        final, stages = final.float(), [s.float() for s in stages or []]
        base = LOSSES[self.recipe.loss]
        loss = group_loss(base, final, stages, y, self.recipe.group_weights) if self.recipe.group_weights and stages else base(final, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def _batch(data: str, n: int):
    import numpy as np
    import torch

    from lightseg_edge.data.dataset import SegmentationDataset
    from lightseg_edge.data.layouts import list_samples
    from lightseg_edge.models import get_model_config

    pre = get_model_config("lmsaunet").preprocess  # every model here normalises the same way at 256x256
    ds = SegmentationDataset(list_samples(data, "train")[:n], pre)
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.stack(ys), ds, np


def _decode_cost(ds, np) -> Dict[str, float]:
    """Seconds per image: decode + resize one JPEG (no cache) vs index the decoded array (the trainer's cache)."""
    from lightseg_edge.data.dataset import load_pair

    t0 = time.perf_counter()
    for s in ds.samples:
        load_pair(s, ds.cfg.size)
    decode = (time.perf_counter() - t0) / len(ds.samples)
    t0 = time.perf_counter()
    for i in range(len(ds.samples)):
        np.ascontiguousarray(ds.images[i]), np.ascontiguousarray(ds.masks[i])
    cached = (time.perf_counter() - t0) / len(ds.samples)
    return {"decode_resize_s": decode, "cached_s": cached}


def _measure(runner: _Runner, x, y, steps: int) -> Dict[str, Any]:
    import resource

    from lightseg_edge.bench.machine import load_between, snapshot

    before, faults = snapshot(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(steps):
        runner.step(x, y)
    sec = (time.perf_counter() - t0) / (steps * x.shape[0])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    load = load_between(before, snapshot())
    return {"s_per_image": sec, "page_faults_per_image": (usage.ru_minflt - faults) / (steps * x.shape[0]),
            "peak_rss_mib": usage.ru_maxrss / 1024, "loadavg_before": load["loadavg_before"], "other_cpu_share": load["other_cpu_share"]}


def _median(values: List[Optional[float]]) -> Optional[float]:
    """None unless every round measured: a variant that crashed once is not reported as a speed."""
    return None if any(v is None for v in values) else statistics.median(values)


def _median_of(variant: Dict[str, Any], key: str) -> str:
    values = [r[key] for r in variant["rounds"] if r.get(key) is not None]
    return f"{statistics.median(values):,.0f}" if values else "-"


def _markdown(result: Dict[str, Any]) -> str:
    cpu = result["environment"].get("cpu") or "?"
    lines = ["# CPU training speed (seconds per training image)", "", f"Created {result['created']}; {cpu}; {result['settings_text']}.", "",
             "| model | variant | s/image per round | s/image (median) | ratio to fp32@256 | first step (s) | page faults per image | peak memory (MiB) | other processes' CPU share |",
             "|---|---|---|---|---|---:|---:|---:|---|"]
    for model, variants in result["models"].items():
        for name, v in variants.items():
            per = " / ".join(r["error"] if r["s_per_image"] is None else f"{r['s_per_image']:.3f}" for r in v["rounds"])
            share = " / ".join("-" if r["other_cpu_share"] is None else f"{r['other_cpu_share']:.0%}" for r in v["rounds"])
            med = "crashed" if v["s_per_image"] is None else f"{v['s_per_image']:.3f}"
            ratio = "-" if v["ratio"] is None else f"{v['ratio']:.2f}"
            firsts = [r["first_step_s"] for r in v["rounds"] if r.get("first_step_s") is not None]
            first = f"{statistics.median(firsts):.1f}" if firsts else "-"
            lines.append(f"| {model} | {name} | {per} | {med} | {ratio} | {first} | {_median_of(v, 'page_faults_per_image')} | "
                         f"{_median_of(v, 'peak_rss_mib')} | {share} |")
    memory: Dict[str, List[str]] = {}
    for variants in result["models"].values():
        for name, v in variants.items():
            for r in v["rounds"]:
                if r.get("memory") and name not in memory.setdefault(r["memory"], []):
                    memory[r["memory"]].append(name)
    lines += [""] + [f"{', '.join(names)}: {how}." for how, names in memory.items()]
    d = result["decode"]
    lines += ["", f"Decoded-image cache: reading + resizing one ISIC JPEG takes {d['decode_resize_s'] * 1000:.1f} ms; indexing the "
              f"trainer's decoded array takes {d['cached_s'] * 1000:.3f} ms (per image, {d['images']} images).", ""]
    return "\n".join(lines)


def _child(args: argparse.Namespace, data: str) -> int:
    import torch

    from lightseg_edge.train.allocator import keep_freed_memory

    memory = "memory: glibc's default allocator" if VARIANTS[args.one[1]].get("malloc_default") else keep_freed_memory()

    torch.set_num_threads(args.threads)
    x, y, _, _ = _batch(data, args.batch_size)
    runner = _Runner(*args.one)
    t0 = time.perf_counter()
    runner.step(x, y)  # untimed: first-call allocations, oneDNN primitive creation, compilation
    first = time.perf_counter() - t0
    print(json.dumps({**_measure(runner, x, y, args.steps), "first_step_s": first, "memory": memory}))
    return 0


def _spawn(args: argparse.Namespace, data: str, model: str, variant: str) -> Dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", model, variant, "--data", data, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:  # recorded, not fatal: a variant that crashes is a finding too
        how = f"killed by signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {"s_per_image": None, "error": f"{how} {tail[0][:200]}".strip(), "loadavg_before": None, "other_cpu_share": None,
                "first_step_s": None}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    from lightseg_edge.cli._common import default_data_dir

    data = args.data or default_data_dir() or str(Path(__file__).resolve().parents[1] / "tests" / "assets" / "isic_sample")
    if args.one:
        return _child(args, data)
    import torch

    from lightseg_edge.bench.environment import collect_environment
    from lightseg_edge.bench.matrix import env_summary
    from lightseg_edge.bench.report import atomic_write

    models = [m for m in args.models.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"error: --variants: unknown {unknown}; expected some of {list(VARIANTS)}", file=sys.stderr)
        return 2
    _, _, ds, np = _batch(data, args.batch_size)
    order = [(m, v) for m in models for v in variants]
    rounds: Dict[Any, List[Dict[str, Any]]] = {k: [] for k in order}
    with _paused(args.pause_pid):
        decode = _decode_cost(ds, np)
        for i in range(args.rounds):
            for key in order if i % 2 == 0 else reversed(order):
                rounds[key].append(_spawn(args, data, *key))
                r = rounds[key][-1]
                shown = r["error"] if r["s_per_image"] is None else f"{r['s_per_image']:.3f} s/image"
                print(f"round {i + 1}/{args.rounds} {key[0]:>13s} {key[1]:<24s} {shown}", file=sys.stderr, flush=True)
    result: Dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # the batch is what the data holds, up to --batch-size (the committed sample has 4 train images)
        "settings_text": (f"batch {len(ds.samples)} real ISIC train images ({Path(data).name}), {args.threads} threads, {args.rounds} interleaved rounds, each "
                          f"a fresh process timing {args.steps} steps after one untimed step; torch {torch.__version__}"),
        "environment": env_summary(collect_environment()), "decode": {**decode, "images": len(ds.samples)}, "models": {},
    }
    for m in models:
        med = {v: _median([r["s_per_image"] for r in rounds[(m, v)]]) for v in variants}
        ref = med.get("fp32@256")
        result["models"][m] = {v: {"rounds": rounds[(m, v)], "s_per_image": med[v], "ratio": med[v] / ref if med[v] and ref else None} for v in variants}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "train_speed.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write(out / "train_speed.md", _markdown(result).encode())
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
