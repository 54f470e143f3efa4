"""Service errors as an OpenAI SDK caller sees them: its own field names, and whether retrying can help.

The errors come from the service's real request parser, so a reworded service message is caught here.
"""

from __future__ import annotations

import json

import pytest

from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.http_edge.openai_compat import error_response
from tts_actor.wire.request_parsing import parse_synthesis_request


def service_error(**body: object) -> TtsError:
    with pytest.raises(TtsError) as caught:
        parse_synthesis_request(json.dumps(body).encode(), Settings(max_text_chars=20))
    return caught.value


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"text": "   "}, None, "'input' is empty"),
        ({"text": "x" * 30}, "input", "input is 30 characters"),
        ({"text": "Hi.", "format": "ogg"}, "response_format", "response_format 'ogg' is not offered"),
    ],
)
def test_messages_and_params_name_the_callers_fields(body: dict, param: str | None, words: str) -> None:
    status, _, answer = error_response(service_error(**body))
    error = answer["error"]
    assert status in (400, 413) and error["param"] == param and words in error["message"], error
    assert "'text'" not in error["message"] and not error["message"].startswith(("text ", "format "))


def test_unknown_backend_is_an_unknown_model() -> None:
    error = TtsError(ErrorCode.UNKNOWN_BACKEND, "unknown backend 'whisper'", "Use one of: piper (see tts.status).")
    status, headers, answer = error_response(error)
    assert status == 404 and answer["error"]["param"] == "model"
    assert answer["error"]["message"] == "unknown model 'whisper'"
    assert headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (ErrorCode.INVALID_REQUEST, "false"),
        (ErrorCode.PAYLOAD_TOO_LARGE, "false"),
        (ErrorCode.UNKNOWN_VOICE, "false"),
        (ErrorCode.BACKEND_FAILED, "false"),  # a 503 that waiting does not heal: package missing, load failed
        (ErrorCode.BUSY, "true"),
        (ErrorCode.BACKEND_NOT_READY, "true"),
        (ErrorCode.SYNTHESIS_FAILED, None),  # the SDK's own default
    ],
)
def test_x_should_retry_says_whether_retrying_can_help(code: ErrorCode, retry: str | None) -> None:
    _, headers, _ = error_response(TtsError(code, "m", "f", backend="xtts"))
    assert headers.get("x-should-retry") == retry
