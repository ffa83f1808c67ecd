"""A storm result with every figure filled in, for the tests of its forms and of the
comparisons."""

import attrs

from bench.load.report import StormResult


def sample(**changes):
    result = StormResult(
        label="metaproxy",
        target="shared",
        settings={
            "instances": 4,
            "routers": 2,
            "fleet": "4 instances, 2 routers",
            "concurrency": 2,
            "ramp": 0.0,
            "keepalive": False,
            "workers": 2,
            "request_timeout": 30.0,
            "target_description": "shared socket /tmp/s",
        },
        started="2025-01-01T00:00:00+00:00",
        duration=2.0,
        requests=110,
        good=100,
        connections=110,
        errors={"status 403": 6, "connection refused": 4},
        boots=4,
        boots_completed=3,
        boots_clean=3,
        boot_failures={"connection refused": 1},
        latencies=[0.001 * i for i in range(1, 101)],
        boot_times=[1.25, 1.5, 1.75],
        boot_lengths=[28, 28, 26, 28],
        generator={
            "workers": 2,
            "cpu_seconds": [0.5, 1.9],
            "busy": [0.25, 0.95],
            "collector_cpu_seconds": 0.1,
        },
        agent={
            "pids": [42],
            "processes": 1,
            "cpu_seconds": 0.0275,
            "peak_rss_bytes": 50 * 2**20,
            "peak_hwm_bytes": 51 * 2**20,
        },
        nova={
            "total": 100,
            "by_status": {"200": 94, "403": 6},
            "by_outcome": {"ok": 94, "bad_signature": 6},
            "cpu_seconds": 0.5,
        },
        host={"cpus": 2, "busy": 0.5},
        notes=["a note"],
    )
    return attrs.evolve(result, **changes)
