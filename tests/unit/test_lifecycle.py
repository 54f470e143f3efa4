"""The pure lifecycle machine: every legal and illegal transition."""

from __future__ import annotations

import itertools
import re
from dataclasses import FrozenInstanceError

import pytest

from statemachine import BackendLifecycle, IllegalTransition, Progress, Reason, State, StateEvent, Trigger

# Written out by hand (not derived from TRANSITIONS) so a change to the table fails here.
LEGAL: dict[tuple[State, Trigger], State] = {
    (State.MISSING, Trigger.START_DOWNLOAD): State.DOWNLOADING,
    (State.MISSING, Trigger.FINISH_LOADING): State.LOADED,
    (State.MISSING, Trigger.FAIL): State.FAILED,
    (State.DOWNLOADING, Trigger.REPORT_PROGRESS): State.DOWNLOADING,
    (State.DOWNLOADING, Trigger.FINISH_DOWNLOAD): State.DOWNLOADING,
    (State.DOWNLOADING, Trigger.FINISH_LOADING): State.LOADED,
    (State.DOWNLOADING, Trigger.FAIL): State.FAILED,
    (State.LOADED, Trigger.FAIL): State.FAILED,
    (State.LOADED, Trigger.UNLOAD): State.MISSING,
    (State.FAILED, Trigger.RETRY): State.DOWNLOADING,
    (State.FAILED, Trigger.RESET): State.MISSING,
    (State.FAILED, Trigger.UNLOAD): State.MISSING,
}

# a path from ``missing`` to each state
PATHS: dict[State, list[Trigger]] = {
    State.MISSING: [],
    State.DOWNLOADING: [Trigger.START_DOWNLOAD],
    State.LOADED: [Trigger.FINISH_LOADING],
    State.FAILED: [Trigger.FAIL],
}


def fire(machine: BackendLifecycle, trigger: Trigger) -> StateEvent:
    if trigger is Trigger.START_DOWNLOAD:
        return machine.start_download(total=100)
    if trigger is Trigger.REPORT_PROGRESS:
        return machine.report_progress(40, 100)
    if trigger is Trigger.FINISH_DOWNLOAD:
        return machine.finish_download(100)
    if trigger is Trigger.FINISH_LOADING:
        return machine.finish_loading()
    if trigger is Trigger.FAIL:
        return machine.fail(Reason.LOAD_ERROR, "tts-actor retry x", "boom")
    if trigger is Trigger.RETRY:
        return machine.retry()
    if trigger is Trigger.RESET:
        return machine.reset()
    return machine.unload()


def machine_in(state: State) -> BackendLifecycle:
    machine = BackendLifecycle("piper", "inst-1")
    for trigger in PATHS[state]:
        fire(machine, trigger)
    assert machine.current is state
    return machine


@pytest.mark.parametrize(("state", "trigger"), list(itertools.product(State, Trigger)))
def test_every_state_and_trigger(state: State, trigger: Trigger) -> None:
    machine = machine_in(state)
    seq_before = machine.last_event.seq
    expected = LEGAL.get((state, trigger))
    assert machine.allowed(trigger) is (expected is not None)
    if expected is None:
        with pytest.raises(IllegalTransition) as info:
            fire(machine, trigger)
        assert info.value.state is state and info.value.trigger is trigger
        assert machine.current is state, "an illegal trigger must not move the machine"
        assert machine.last_event.seq == seq_before, "an illegal trigger must not emit"
        return
    event = fire(machine, trigger)
    assert machine.current is expected
    assert event.from_state is state and event.to_state is expected
    assert event.seq == seq_before + 1


def test_first_event_is_missing_at_startup() -> None:
    machine = BackendLifecycle("mms", "inst-1")
    event = machine.last_event
    assert (event.from_state, event.to_state, event.reason, event.seq) == (None, State.MISSING, Reason.STARTUP, 0)


def test_events_carry_everything_and_are_immutable() -> None:
    seen: list[StateEvent] = []
    machine = BackendLifecycle("mms", "inst-7", clock=lambda: "2026-01-01T00:00:00.000Z")
    machine.subscribe(seen.append)
    machine.start_download(total=1000)
    machine.report_progress(500, 1000)
    machine.finish_download(1000)
    machine.finish_loading()
    assert [e.to_state for e in seen] == [State.DOWNLOADING, State.DOWNLOADING, State.DOWNLOADING, State.LOADED]
    assert [e.seq for e in seen] == [1, 2, 3, 4]
    assert seen[1].progress == Progress(500, 1000) and seen[1].progress.fraction == 0.5
    assert seen[3].reason is Reason.LOADED_AFTER_DOWNLOAD and seen[3].progress is None
    data = seen[1].to_dict()
    assert data["from"] == "downloading" and data["to"] == "downloading"
    assert data["backend"] == "mms" and data["instance"] == "inst-7"
    assert data["progress"] == {"done": 500, "total": 1000}
    assert StateEvent.from_dict(data) == seen[1]
    with pytest.raises(FrozenInstanceError):
        seen[0].seq = 99  # type: ignore[misc]


def test_timestamps_are_rfc3339_utc() -> None:
    machine = BackendLifecycle("piper", "i")
    event = machine.finish_loading()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event.at)


def test_failure_needs_a_failure_reason_and_a_fix() -> None:
    machine = BackendLifecycle("xtts", "i")
    with pytest.raises(ValueError):
        machine.fail(Reason.RETRY, "fix", "not a failure")
    with pytest.raises(ValueError):
        machine.fail(Reason.PACKAGE_MISSING, "", "no fix")
    assert machine.current is State.MISSING
    event = machine.fail(Reason.PACKAGE_MISSING, "pip install -e '.[xtts]'", "TTS missing")
    assert (event.reason, event.fix) == (Reason.PACKAGE_MISSING, "pip install -e '.[xtts]'")
    assert machine.fix == event.fix and machine.reason is Reason.PACKAGE_MISSING


def test_retry_clears_the_failure_and_unload_reasons_are_checked() -> None:
    machine = BackendLifecycle("mms", "i")
    machine.fail(Reason.HUB_UNREACHABLE, "check HF_ENDPOINT", "refused")
    event = machine.retry()
    assert event.reason is Reason.RETRY and machine.fix is None
    machine.finish_loading()
    with pytest.raises(ValueError):
        machine.unload(Reason.OFFLINE)
    assert machine.unload(Reason.IDLE_TIMEOUT).reason is Reason.IDLE_TIMEOUT


def test_statemachine_package_does_no_io() -> None:
    import statemachine.lifecycle as lifecycle

    source = open(lifecycle.__file__, encoding="utf-8").read()
    for forbidden in ("import nats", "import asyncio", "import socket", "open(", "import os"):
        assert forbidden not in source
