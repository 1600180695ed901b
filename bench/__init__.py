"""Benchmarks (accuracy, latency, store under load): they print tables and assert nothing."""
