"""CPU regression benchmarks of the request path (pytest-benchmark): C{make bench-cpu}."""
