"""Release gates: budgets an artifact must meet to be published.

A team states what it ships ("int8 may lose at most 1 point, the Android model stays under 3 MB and 5 ms");
an artifact over budget is left out of the bundle and the build exits with GATE_FAILURE_EXIT_CODE.
Limits are resolved from least to most specific: defaults, [gates], [gates.<format>], [gates."<format>:<variant>"]
in the config file, then command-line flags, which apply to every artifact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from imgpipe.errors import ConfigError

GATE_FAILURE_EXIT_CODE = 3


@dataclass(frozen=True)
class GateLimits:
    max_accuracy_drop: float | None = 0.05  # fraction of the test split (0.01 = 1 point) vs the float Keras model
    min_accuracy: float | None = None
    max_bytes: int | None = None
    max_latency_ms: float | None = None  # single-image p50 on this machine's CPU


@dataclass
class GatePolicy:
    default: GateLimits = field(default_factory=GateLimits)
    overrides: dict[str, dict] = field(default_factory=dict)  # "tflite" or "tflite:int8" -> partial limits
    command_line: dict = field(default_factory=dict)

    def limits_for(self, fmt: str, variant: str, source: str = "float") -> GateLimits:
        limits = self.default
        keys = [fmt, f"{fmt}:{variant}"] + ([] if source == "float" else [f"{fmt}:{source}-{variant}"])
        for key in keys:
            limits = replace(limits, **self.overrides.get(key, {}))
        return replace(limits, **self.command_line)

    @classmethod
    def from_table(cls, table: dict, where: str) -> "GatePolicy":
        """[gates] from a config file: plain keys are defaults, sub-tables are per format or format:variant."""
        names = {f.name for f in fields(GateLimits)}
        plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
        _check_keys(plain, names, f"{where} [gates]")
        overrides = {}
        for key, sub in table.items():
            if isinstance(sub, dict):
                _check_keys(sub, names, f'{where} [gates."{key}"]')
                overrides[key] = dict(sub)
        return cls(replace(GateLimits(), **plain), overrides)


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

    def to_dict(self) -> dict:
        return {"passed": self.passed, "limits": asdict(self.limits), "checks": self.checks}


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
    return f"{check['gate']}: {value}"


def _check_keys(values: dict, names: set[str], where: str) -> None:
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown gate(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
