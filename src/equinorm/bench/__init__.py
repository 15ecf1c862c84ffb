"""Benchmarks: input-pipeline throughput and training-step time per arch x norm."""
