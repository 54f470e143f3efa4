"""The service's side of NATS permissions: refusals are logged and counted; the inbox prefix is a setting."""

from __future__ import annotations

import nats.errors
import pytest
from structlog.testing import capture_logs

from tts_actor.config import ConfigError, load_settings
from tts_actor.nats_edge.auth import connect_options
from tts_actor.nats_edge.connection import report_nats_error
from tts_actor.observability import metrics


def count(operation: str) -> float:
    return metrics.NATS_PERMISSION_ERRORS.labels(operation)._value.get()


@pytest.mark.parametrize(
    ("text", "operation", "subject", "queue"),
    [
        ('nats: Permissions Violation for Subscription to "tts.cancel"', "subscription", "tts.cancel", None),
        (
            'nats: permissions violation for subscription to "tts.backend.piper.synthesize" using queue "tts-piper"',
            "subscription",
            "tts.backend.piper.synthesize",
            "tts-piper",
        ),
        ('nats: permissions violation for publish to "$O.tts_audio.C.abc"', "publish", "$O.tts_audio.C.abc", None),
    ],
)
def test_a_permission_violation_is_one_warning_with_its_subject_and_a_count(
    text: str, operation: str, subject: str, queue: str | None
) -> None:
    before = count(operation)
    with capture_logs() as logs:
        report_nats_error(nats.errors.Error(text))
    assert count(operation) == before + 1
    (event,) = [e for e in logs if e["event"] == "nats_permission_denied"]
    assert (event["log_level"], event["subject"], event["operation"], event["queue"]) == (
        "warning",
        subject,
        operation,
        queue,
    )


def test_other_errors_are_not_counted_as_permission_errors() -> None:
    before = count("publish") + count("subscription")
    with capture_logs() as logs:
        report_nats_error(nats.errors.Error("nats: slow consumer"))
    assert count("publish") + count("subscription") == before
    assert not [e for e in logs if e["event"] == "nats_permission_denied"]


def test_the_inbox_prefix_setting_reaches_the_connection() -> None:
    settings = load_settings({"NATS_INBOX_PREFIX": "_INBOX_translator-a"})
    assert connect_options(settings) == {"inbox_prefix": "_INBOX_translator-a"}
    assert "inbox_prefix" not in connect_options(load_settings({}))
    for bad in ("_INBOX.>", "a b", "_INBOX.", "x..y"):
        with pytest.raises(ConfigError, match="NATS_INBOX_PREFIX"):
            load_settings({"NATS_INBOX_PREFIX": bad})
