"""The fleet cycle: one evaluation of every watched InferenceDeployment, in separate rooms.

    watch events -> state.Registry -> inputs (contexts, query set) -> prom snapshot
        -> evaluation (engine verdicts) -> recycle.planner / recycle.machine (pure decisions)
        -> execution (performs moves through ports) -> reporting (typed status, events)

``controller.FleetController`` runs one cycle over those rooms and owns nothing else; see
``docs/architecture.md`` for which module owns what.
"""
