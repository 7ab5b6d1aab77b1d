"""The calm-fleet end-to-end test, replayed offline many times: how often would it condemn a pod?

    python benchmarks/calm_fleet.py [--runs 1000] [--tooth test] [--surge all] [--seed 5]

``tests/e2e/test_operator.py::test_healthy_fleet_with_spikes_and_a_surge_is_never_recycled``
runs six healthy pods under a traffic surge and, a few seconds in, turns three of them into a
``spikes``, a ``cleanup_spikes`` and a ``gc_sawtooth`` pod. Whether a rule fires depends on
draws the test does not control: the pods' levels (seeded by the namespace's random name), the
point of the surge the simulator has reached, and the moment of the switch. This script draws
them many times and runs the simulator's own models through the engine with the test's policy
(``fast_health``, a 2 s cycle, the simulator's speed of 10), one evaluation per cycle, and
prints how many runs condemned a pod and why.

``--tooth`` is the sawtooth period in real seconds: ``test`` (the default) is the test's own,
``infercycle_sim.fleets.collector_sawtooth`` (30 s); ``random`` draws 12-72 s, the simulator's
default of 2-12 simulated minutes. ``--surge half`` puts the surge on the three pods that stay
``surge`` only. The test's settings are the defaults. The target is no pod condemned; the
script exits 1 when one was.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter

from infercycle.api.resolver import resolve_policy
from infercycle.api.resources import RecyclePolicySpec
from infercycle.api.values import HealthPolicy
from infercycle.health import HealthEngine, PodKey
from infercycle_sim.fleets import SIM_AGE_OFFSET, collector_sawtooth, fast_health
from infercycle_sim.scenarios import HOUR, PodModel, make_pod_model, surge_load

SPEED = 10.0
CYCLE_S = 2.0
PODS = 6
WATCHED_S = 80.0  # the test watches for 75 s after the switch


def one_run(
    policy: HealthPolicy,
    rnd: random.Random,
    run: int,
    saw: dict[str, float] | None,
    surge_all: bool,
) -> tuple[str, str] | None:
    """The first condemnation of one run: the condemned pod's scenario and what happened."""
    seeds = [rnd.randrange(1 << 30) for _ in range(PODS)]
    turned: dict[int, tuple[str, dict[str, float] | None]] = {
        0: ("spikes", None),
        1: ("cleanup_spikes", None),
        2: ("gc_sawtooth", saw),
    }
    before = [make_pod_model("surge", seed) for seed in seeds]
    after: list[PodModel] = [
        make_pod_model(turned[i][0], seed, turned[i][1]) if i in turned else before[i]
        for i, seed in enumerate(seeds)
    ]
    fleet_start = rnd.uniform(0.0, 5 * HOUR)  # anywhere before, in or after the surge
    switch = rnd.uniform(4.0, 20.0)
    engine = HealthEngine(policy)
    keys = [PodKey(f"calm-{i}", f"{run}-{i}") for i in range(PODS)]
    scenario_of = {key: model.scenario for key, model in zip(keys, after, strict=True)}
    offset = float(SIM_AGE_OFFSET)
    t = 0.0
    while t < switch + WATCHED_S:
        t += CYCLE_S
        load = surge_load(fleet_start + t * SPEED)
        for i, key in enumerate(keys):
            model = before[i] if t < switch else after[i]
            carried = surge_all or model.scenario == "surge"
            engine.observe(t, key, 0.0, model.sample(offset + t * SPEED, load if carried else 1.0))
        for key, verdict in engine.evaluate(t).items():
            if verdict.degraded:
                reasons = "; ".join(reason.text for reason in verdict.reasons)
                scenario = scenario_of[key]
                return scenario, f"{key.name} ({scenario}) at {t:.0f} s: {reasons}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument(
        "--tooth", default="test", help="sawtooth period: real s, 'test' or 'random'"
    )
    parser.add_argument("--surge", choices=("all", "half"), default="all")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if args.tooth == "random":
        tooth = None
    elif args.tooth == "test":
        tooth = collector_sawtooth(SPEED)["saw_period"] / SPEED
    else:
        try:
            tooth = float(args.tooth)
        except ValueError:
            parser.error(
                f"--tooth {args.tooth!r}: give seconds (for example 30), 'test' or 'random'"
            )
        if tooth <= 0:
            parser.error("--tooth must be positive")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    policy = resolve_policy(
        RecyclePolicySpec.model_validate({"health": fast_health(CYCLE_S)}),
        cycle_interval_s=CYCLE_S,
    ).health
    saw = None if tooth is None else {**collector_sawtooth(SPEED), "saw_period": tooth * SPEED}
    rnd = random.Random(args.seed)
    found = [one_run(policy, rnd, run, saw, args.surge == "all") for run in range(args.runs)]
    condemned = [hit for hit in found if hit is not None]
    kinds = Counter(scenario for scenario, _ in condemned)
    teeth = "teeth of 12-72 s at random" if tooth is None else f"teeth of {tooth:g} s"
    print(
        f"{teeth}, surge on {args.surge} pods, {args.runs} runs: "
        f"{len(condemned)} condemned a pod ({100 * len(condemned) / args.runs:.1f} %)"
    )
    for kind, count in sorted(kinds.items()):
        print(f"  ({kind}): {count}")
    for _, text in condemned[:10]:
        print(f"  e.g. {text}")
    return 1 if condemned else 0


if __name__ == "__main__":
    sys.exit(main())
