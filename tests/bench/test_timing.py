"""Latency statistics and the stopping rule, on a fake predictor whose call durations are known (no wall clock)."""

from __future__ import annotations

import numpy as np
import pytest
from bench_helpers import FakePredictor

from lightseg_edge.bench.records import LatencyStats
from lightseg_edge.bench.timing import PerfCounterTimer, TimingConfig, run_timed, time_compute, time_end_to_end, timer_for
from lightseg_edge.errors import InvalidInputError


def test_stats_of_known_durations(fake_clock):
    # Warm-up eats the first two durations (1000 ms each, which would dominate the mean if they were counted).
    p = FakePredictor(fake_clock, [1000, 1000, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    x = np.zeros((4, 3, 64, 64), np.float32)
    s = time_compute(p, x, TimingConfig(warmup=2, iters=10), timer=PerfCounterTimer(fake_clock))
    got = np.array([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], float)
    assert s.n == 10 and s.batch == 4
    assert s.mean == pytest.approx(got.mean())
    assert s.std == pytest.approx(got.std(ddof=1))
    assert (s.min, s.max) == (10.0, 100.0)
    for q, v in ((50, s.p50), (90, s.p90), (99, s.p99)):
        assert v == pytest.approx(np.percentile(got, q))
    assert s.throughput == pytest.approx(4 * 1000.0 / got.mean())
    assert p.calls.count("infer") == 12


def test_min_time_counts_timed_time_not_calls(fake_clock):
    p = FakePredictor(fake_clock, [100])
    s = run_timed(lambda: p.infer(np.zeros((1, 3, 8, 8), np.float32)), TimingConfig(warmup=0, min_time=0.35, min_iters=2),
                  timer=PerfCounterTimer(fake_clock))
    assert s.n == 4  # 4 x 100 ms is the first sum >= 0.35 s


def test_min_iters_and_max_iters_bound_the_loop(fake_clock):
    slow = FakePredictor(fake_clock, [1000])
    s = run_timed(lambda: slow.infer(np.zeros((1, 3, 8, 8), np.float32)), TimingConfig(warmup=0, min_time=0.5, min_iters=3),
                  timer=PerfCounterTimer(fake_clock))
    assert s.n == 3  # the budget is spent after one call, but at least 3 are made
    fast = FakePredictor(fake_clock, [0.001])
    s = run_timed(lambda: fast.infer(np.zeros((1, 3, 8, 8), np.float32)), TimingConfig(warmup=0, min_time=10.0, min_iters=1, max_iters=25),
                  timer=PerfCounterTimer(fake_clock))
    assert s.n == 25


def test_end_to_end_uses_predict_for_one_image_and_predict_batch_for_more(fake_clock):
    p = FakePredictor(fake_clock, [5])
    img = np.zeros((100, 80, 3), np.uint8)
    one = time_end_to_end(p, [img], TimingConfig(warmup=1, iters=3), timer=PerfCounterTimer(fake_clock))
    assert p.calls == ["predict"] * 4 and one.batch == 1 and one.p50 == pytest.approx(5.0)
    p.calls.clear()
    three = time_end_to_end(p, [img] * 3, TimingConfig(warmup=0, iters=2), timer=PerfCounterTimer(fake_clock))
    assert p.calls == ["predict_batch"] * 2 and three.throughput == pytest.approx(3 * 1000.0 / 5.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(iters=5, min_time=1.0), "exclusive"),
    (dict(warmup=-1), "--warmup"),
    (dict(iters=0), "--iters"),
    (dict(min_time=0.0), "--min-time"),
])
def test_timing_config_rejects_bad_values(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        TimingConfig(**kwargs)


def test_default_budget_and_description():
    assert TimingConfig().budget_s == 2.0
    assert TimingConfig(iters=7).budget_s is None
    assert "7 timed calls" in TimingConfig(iters=7).describe()
    assert TimingConfig.from_dict(TimingConfig(warmup=3, min_time=1.5).to_dict()) == TimingConfig(warmup=3, min_time=1.5)


def test_latency_stats_single_sample_and_errors():
    s = LatencyStats.from_ns([2_000_000])
    assert (s.n, s.mean, s.std, s.p99) == (1, 2.0, 0.0, 2.0)
    with pytest.raises(ValueError, match="no timed calls"):
        LatencyStats.from_ns([])


def test_cpu_predictor_gets_the_host_clock(fake_clock):
    assert isinstance(timer_for(FakePredictor(fake_clock, [1])), PerfCounterTimer)


@pytest.mark.gpu
def test_cuda_events_time_a_cuda_predictor():  # runs only where a CUDA device exists
    import torch

    from lightseg_edge.bench.timing import CudaEventTimer

    timer = CudaEventTimer(0)
    x = torch.randn(1024, 1024, device="cuda")
    assert timer(lambda: x @ x) > 0


def test_prepared_calls_get_a_fresh_argument_and_setup_is_not_timed(monkeypatch):
    from lightseg_edge.bench import timing

    now = [0]
    monkeypatch.setattr(timing.time, "perf_counter_ns", lambda: now[0])
    made, seen = [], []

    def setup():  # slow (1 s) and not part of the figure
        now[0] += 10**9
        made.append(object())
        return made[-1]

    def call(arg):
        now[0] += 2 * 10**6
        seen.append(arg)

    per = timing.interleaved_rounds({"p": timing.Prepared(setup, call), "q": lambda: None}, rounds=2, iters=3, warmup=1)
    assert per["p"] == [2.0, 2.0] and per["q"] == [0.0, 0.0]
    assert seen == made and len(made) == 7  # one new argument per call, the warm-up call included
