"""Counting verdicts: the non-inferior rate and its Wilson score interval."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson, 1927); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Tally:
    wins: int = 0
    ties: int = 0
    losses: int = 0
    errors: int = 0
    disagreements: int = 0

    @property
    def samples(self) -> int:
        return self.wins + self.ties + self.losses + self.errors

    @property
    def judged(self) -> int:
        """Verdicts with a result (errors excluded): the denominator of the rate."""
        return self.wins + self.ties + self.losses

    @property
    def non_inferior_rate(self) -> float | None:
        """(wins + ties) / judged; None before any judged verdict."""
        return (self.wins + self.ties) / self.judged if self.judged else None

    def interval(self) -> tuple[float, float] | None:
        return wilson(self.wins + self.ties, self.judged) if self.judged else None

    def as_dict(self) -> dict[str, float | int | None]:
        ci = self.interval()
        rate = self.non_inferior_rate
        return {"samples": self.samples, "wins": self.wins, "ties": self.ties, "losses": self.losses,
                "errors": self.errors, "non_inferior_rate": None if rate is None else round(rate, 6),
                "ci_low": None if ci is None else round(ci[0], 6), "ci_high": None if ci is None else round(ci[1], 6),
                "disagreement_rate": round(self.disagreements / self.judged, 6) if self.judged else None}


def tally(verdicts: Iterable[str], disagreements: int = 0) -> Tally:
    counts = {"win": 0, "tie": 0, "loss": 0, "error": 0}
    for v in verdicts:
        counts[v if v in counts else "error"] += 1
    return Tally(counts["win"], counts["tie"], counts["loss"], counts["error"], disagreements)
