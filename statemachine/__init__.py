"""Pure backend lifecycle machine: states, reasons, events. No I/O."""

from statemachine.lifecycle import (
    FAILURE_REASONS,
    TRANSITIONS,
    BackendLifecycle,
    IllegalTransition,
    Progress,
    Reason,
    State,
    StateEvent,
    Trigger,
    rfc3339_now,
)

__all__ = [
    "FAILURE_REASONS",
    "TRANSITIONS",
    "BackendLifecycle",
    "IllegalTransition",
    "Progress",
    "Reason",
    "State",
    "StateEvent",
    "Trigger",
    "rfc3339_now",
]
