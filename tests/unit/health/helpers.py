"""Small builders for engine tests: hand-made rules and policies, and a cycle loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from infercycle.api.values import HealthPolicy, Rule, RuleKind
from infercycle.health import HealthEngine, PodKey, Verdict

MIB = float(2**20)
GIB = float(2**30)

Signals = Mapping[str, float | None]


def make_rule(
    kind: RuleKind,
    signal: str = "cpu",
    threshold: float = 2.0,
    *,
    name: str = "rule",
    clear: float | None = None,
    window_s: float = 300.0,
    **extra: object,
) -> Rule:
    return Rule(
        name=name,
        signal=signal,
        kind=kind,
        threshold=threshold,
        clear=threshold if clear is None else clear,
        window_s=window_s,
        **extra,  # type: ignore[arg-type]
    )


def make_policy(
    *rules: Rule,
    quorum: int = 1,
    warmup_s: float = 0.0,
    min_request_rate: float = 0.1,
    stale_after_s: float = 120.0,
) -> HealthPolicy:
    return HealthPolicy(
        rules=rules,
        quorum=quorum,
        warmup_s=warmup_s,
        min_request_rate=min_request_rate,
        stale_after_s=stale_after_s,
    )


def key(name: str, uid: str | None = None) -> PodKey:
    return PodKey(name, uid or f"{name}-uid")


class Run:
    """Drives one engine through cycles and keeps every verdict."""

    def __init__(self, policy: HealthPolicy, step_s: float = 15.0) -> None:
        self.engine = HealthEngine(policy)
        self.step_s = step_s
        self.t = 0.0
        self.history: list[tuple[float, dict[PodKey, Verdict]]] = []
        self.started: dict[PodKey, float] = {}

    def advance(
        self, duration_s: float, pods: Mapping[PodKey, Callable[[float], Signals]]
    ) -> dict[PodKey, Verdict]:
        """Run cycles for ``duration_s``; each pod's function maps fleet time to signals."""
        end = self.t + duration_s
        verdicts: dict[PodKey, Verdict] = {}
        while self.t < end - 1e-9:
            self.t += self.step_s
            for pod, signals in pods.items():
                started = self.started.setdefault(pod, self.t)
                self.engine.observe(self.t, pod, started, signals(self.t))
            verdicts = self.engine.evaluate(self.t)
            self.history.append((self.t, verdicts))
        return verdicts

    def first_degraded(self, pod: PodKey) -> float | None:
        for t, verdicts in self.history:
            verdict = verdicts.get(pod)
            if verdict is not None and verdict.degraded:
                return t
        return None

    def ever_degraded(self, pod: PodKey) -> bool:
        return self.first_degraded(pod) is not None


def constant(**values: float | None) -> Callable[[float], Signals]:
    return lambda _t: dict(values)


def state_of(verdict: Verdict, rule: str) -> str:
    return next(e.state.value for e in verdict.evaluations if e.rule.name == rule)
