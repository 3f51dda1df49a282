"""Benchmark results: a named set of numbers, printed as a table or as JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BenchResult", "percentile"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))] if q not in (0, 100) else (min(values) if q == 0 else max(values))


@dataclass
class BenchResult:
    name: str
    numbers: dict[str, Any]
    goals: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        width = max(len(k) for k in self.numbers) + 2
        lines = [f"== bench {self.name} =="]
        for k, v in self.numbers.items():
            lines.append(f"{k:<{width}}{v:.4g}" if isinstance(v, float) else f"{k:<{width}}{v}")
        for goal, ok in self.goals.items():
            lines.append(f"goal {goal}: {'met' if ok else 'NOT met'}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {**self.numbers, "goals": self.goals}


def dump(results: list[BenchResult]) -> str:
    return json.dumps({r.name: r.to_json() for r in results}, indent=2, default=float)
