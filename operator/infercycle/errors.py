"""Every exception InferCycle raises has one root, ``InferCycleError``; this module is the tree.

    InferCycleError
    ├── InvalidInputError (also a ValueError)   what a user wrote cannot be used; the message
    │   │                                       names the field and the fix
    │   ├── PolicyError                         a merged policy (RecyclePolicy + deployment)
    │   ├── TraceError                          a replay trace line
    │   ├── TargetError                         an attached workload (targetRef) is missing
    │   │                                       or cannot be judged
    │   └── AgentConfigError                    the agent's flags or environment
    ├── KubeError                               a Kubernetes API call failed
    │   └── ConflictError                       the object changed since it was read (HTTP 409)
    ├── PrometheusError                         a query failed or answered something unusable
    │   ├── PrometheusUnreachable               no answer at all (refused, reset)
    │   └── QueryTimeoutError, QueryRejectedError, UnexpectedAnswerError, DuplicateSeriesError
    │                                           one query's own failure (prom/reader.py)
    ├── AgentClientError                        a call from the operator to a pod's agent
    │   ├── AgentError                          the agent answered, with an error
    │   └── AgentUnavailable                    the agent could not be reached in time
    └── AgentSideError                          inside the agent (answered as an HTTP error)
        ├── StoreError ...                      a checkpoint could not be written or used
        ├── ProcessError ...                    the server process could not be signalled
        ├── HookError ...                       the server's session hook failed
        └── AgentOperationError                 an operation failed, with status and code

The leaves live beside the code that raises them (``agent/store.py``, ``kube/api.py``, ...);
the roots live here, so a caller can catch a whole family without importing its module, and
this module imports nothing, so every layer may use it. Outcomes that are expected in normal
operation (a refused eviction, a query with no data) are typed results, not exceptions.
"""

from __future__ import annotations

__all__ = [
    "AgentClientError",
    "AgentConfigError",
    "AgentSideError",
    "ConflictError",
    "InferCycleError",
    "InvalidInputError",
    "KubeError",
    "PolicyError",
    "PrometheusError",
    "PrometheusUnreachable",
    "TargetError",
    "TraceError",
]


class InferCycleError(Exception):
    """The root of every error InferCycle raises."""


class InvalidInputError(InferCycleError, ValueError):
    """Input from a user cannot be used; the message names the field and the fix."""


class PolicyError(InvalidInputError):
    """A merged policy that cannot be used; the message names the field and the fix."""


class TraceError(InvalidInputError):
    """A replay trace that cannot be replayed; the message says where and what."""


class TargetError(InvalidInputError):
    """The workload a deployment attaches to cannot be used; the message names it and the fix."""


class AgentConfigError(InvalidInputError):
    """The agent's settings cannot work; the message names the flag, its variable and the fix."""


class KubeError(InferCycleError):
    """A Kubernetes API call failed."""


class ConflictError(KubeError):
    """The object changed since it was read; read it again and retry."""


class PrometheusError(InferCycleError):
    """A Prometheus query failed or answered something the operator cannot use."""


class PrometheusUnreachable(PrometheusError):  # noqa: N818 - the condition reason's own name
    """Prometheus did not answer at all: connection refused or reset."""


class AgentClientError(InferCycleError):
    """A call from the operator to a pod's recycle agent failed.

    ``may_have_acted`` is true when the request may have reached the agent although no answer
    came back (a timeout, or a connection reset after the request was sent): the agent may
    have done what it was asked. A refused connection or an error answer is false.
    """

    may_have_acted: bool = False


class AgentSideError(InferCycleError):
    """Raised inside the recycle agent; the agent answers it as an HTTP error."""
