"""Release gates: budgets an artifact must meet to be published.

A team states what it ships ("int8 may lose at most 1 point, the Android model stays under 3 MB and 5 ms");
an artifact over budget is left out of the bundle and the build exits with GATE_FAILURE_EXIT_CODE.
Limits are resolved from least to most specific: defaults, [gates], [gates.<format>], [gates."<format>:<variant>"]
in the config file, then command-line flags, which apply to every artifact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import GateLimits, GatePolicy
from .verify import Verification

GATE_FAILURE_EXIT_CODE = 3


@dataclass
class GateResult:
    limits: GateLimits
    checks: list[dict]  # {"gate", "limit", "value", "passed"}; passed None when the value was not measured

    @property
    def passed(self) -> bool:
        return all(c["passed"] is not False for c in self.checks)

    @property
    def failures(self) -> list[dict]:
        return [c for c in self.checks if c["passed"] is False]

    def reasons(self) -> list[str]:
        return [describe_failure(c) for c in self.failures]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "limits": asdict(self.limits), "checks": self.checks}


def judge(verification: Verification, policy: GatePolicy) -> GateResult:
    """The verdict on one artifact: its budgets, its structure, and parity with the model it came from."""
    a = verification.artifact
    limits = policy.limits_for(a.format, a.variant, a.source)
    result = evaluate_gates(limits, {**verification.metrics, "bytes": a.bytes}, verification.structure_ok)
    parity = verification.parity
    if parity is not None:
        value = f"agreement {parity['agreement']:.1%}, max|dp| {parity['max_abs_prob_diff']:.1e}"
        limit = f">= {parity['min_agreement']:.1%}, <= {parity['max_abs_prob_diff_limit']:.0e} vs {parity['reference']}"
        result.checks.append({"gate": "parity", "limit": limit, "value": value, "passed": parity["passed"]})
    return result


def evaluate_gates(limits: GateLimits, metrics: dict, structure_ok: bool = True) -> GateResult:
    measured = {
        "max_accuracy_drop": (metrics.get("accuracy_drop"), lambda v, lim: v <= lim + 1e-9),
        "min_accuracy": (metrics.get("accuracy"), lambda v, lim: v >= lim - 1e-9),
        "max_bytes": (metrics.get("bytes"), lambda v, lim: v <= lim),
        "max_latency_ms": (metrics.get("latency_ms_p50"), lambda v, lim: v <= lim),
    }
    checks = []
    for gate, (value, ok) in measured.items():
        limit = getattr(limits, gate)
        if limit is not None:
            checks.append(
                {
                    "gate": gate,
                    "limit": limit,
                    "value": value,
                    "passed": None if value is None else bool(ok(value, limit)),
                }
            )
    if not structure_ok:
        checks.append({"gate": "structural_checks", "limit": "all pass", "value": "failed", "passed": False})
    return GateResult(limits, checks)


def describe_failure(check: dict) -> str:
    value, limit = check["value"], check["limit"]
    if check["gate"] == "max_bytes":
        return f"{value:,} bytes > max_bytes {limit:,}"
    if check["gate"] == "max_latency_ms":
        return f"p50 {value:.2f} ms > max_latency_ms {limit:g}"
    if check["gate"] == "max_accuracy_drop":
        return f"accuracy drop {100 * value:.1f} pt > max_accuracy_drop {100 * limit:g} pt"
    if check["gate"] == "min_accuracy":
        return f"accuracy {100 * value:.1f}% < min_accuracy {100 * limit:g}%"
    if check["gate"] == "parity":
        return f"parity {value} outside {limit}"
    return f"{check['gate']}: {value}"
