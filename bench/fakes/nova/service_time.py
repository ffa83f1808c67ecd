# -*- test-case-name: tests.bench.fakes.test_fakenova -*-
"""How long the fake Nova takes to answer: a fixed time or a distribution
(L{ServiceTime}), and the share of a concurrency limit each process enforces
(L{concurrency_share})."""

from __future__ import annotations

import math
import random

import attrs

__all__ = ["ServiceTime", "concurrency_share"]

_DISTRIBUTIONS = {"fixed": 1, "uniform": 2, "exp": 1, "lognormal": 2}


@attrs.frozen
class ServiceTime:
    """How long Nova takes to answer one request, in seconds.

    Specs (L{parse}): C{fixed:S}; C{uniform:A:B} (A <= B); C{exp:MEAN} (exponential);
    C{lognormal:MEDIAN:SIGMA} (the log of the time is normal with mean C{ln(MEDIAN)} and
    standard deviation C{SIGMA}). All values are seconds except SIGMA, all >= 0, MEDIAN
    > 0.
    """

    kind: str
    params: tuple[float, ...]

    @classmethod
    def fixed(cls, seconds: float) -> ServiceTime:
        return cls.parse(f"fixed:{seconds!r}")

    @classmethod
    def parse(cls, spec: str) -> ServiceTime:
        """@raise ValueError: not one of the specs above."""
        kind, *fields = str(spec).split(":")
        if kind not in _DISTRIBUTIONS:
            raise ValueError(
                f"{spec!r}: expected fixed:S, uniform:A:B, exp:MEAN or lognormal:MEDIAN:SIGMA"
            )
        if len(fields) != _DISTRIBUTIONS[kind]:
            raise ValueError(f"{spec!r}: {kind} takes {_DISTRIBUTIONS[kind]} value(s)")
        try:
            params = tuple(float(f) for f in fields)
        except ValueError:
            raise ValueError(f"{spec!r}: not a number") from None
        if not all(math.isfinite(p) and p >= 0 for p in params):
            raise ValueError(f"{spec!r}: values must be finite and not negative")
        if kind == "uniform" and params[0] > params[1]:
            raise ValueError(f"{spec!r}: A must not exceed B")
        if kind == "lognormal" and params[0] == 0:
            raise ValueError(f"{spec!r}: the median must be positive")
        return cls(kind, params)

    @property
    def spec(self) -> str:
        """The canonical spec, which L{parse} reads back."""
        return ":".join([self.kind, *(repr(p) for p in self.params)])

    @property
    def seconds(self) -> float | None:
        """The fixed time, or C{None} for a distribution."""
        return self.params[0] if self.kind == "fixed" else None

    def draw(self, rng: random.Random) -> float:
        """One service time; a fixed time draws nothing from C{rng}."""
        kind = self.kind
        if kind == "fixed":
            return self.params[0]
        if kind == "uniform":
            return rng.uniform(*self.params)
        if kind == "exp":
            mean = self.params[0]
            return rng.expovariate(1.0 / mean) if mean > 0 else 0.0
        median, sigma = self.params
        return rng.lognormvariate(math.log(median), sigma)


def concurrency_share(total: int, processes: int, index: int) -> int:
    """The part of a C{total} concurrency limit process C{index} of C{processes} enforces:
    the total split as evenly as possible (0, unlimited, stays 0).

    @raise ValueError: a limit below the number of processes (some would get none).
    """
    if total == 0:
        return 0
    if total < processes:
        raise ValueError(f"concurrency {total} is below the number of processes ({processes})")
    return total // processes + (1 if index < total % processes else 0)
