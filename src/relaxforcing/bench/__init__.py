"""Benchmarks: per-policy attention, DiT, decode and end-to-end timings plus peak memory."""

from relaxforcing.bench.run import BenchResult, bench_policy, run_bench

__all__ = ["BenchResult", "bench_policy", "run_bench"]
