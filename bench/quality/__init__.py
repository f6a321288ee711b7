"""Detection quality on the Numenta Anomaly Benchmark's development folders (`make quality`)."""
