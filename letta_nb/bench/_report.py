"""Benchmark results: a named set of numbers, printed as a table or as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BenchResult", "percentile"]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


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
