"""Running inferq's services as local processes: for the local stack, tests and benchmarks."""
