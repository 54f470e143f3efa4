"""Priority and deadline_unreachable at the HTTP edge: the extension field, the header, the status and retry hints."""

from __future__ import annotations

import pytest

from tts_actor.errors import ErrorCode, TtsError
from tts_actor.http_edge.openai_compat import EdgeSettings, error_response, map_speech_request
from tts_actor.http_edge.speech import REQUEST_FIELDS
from tts_actor.wire.messages import Priority, SynthesisRequest

BODY = {"model": "tts-1", "input": "Hello there.", "voice": "default"}


def test_priority_comes_from_the_body_or_the_header_and_reaches_the_request() -> None:
    by_body = map_speech_request({**BODY, "priority": "interactive"}, EdgeSettings(), {}, REQUEST_FIELDS)
    by_header = map_speech_request(BODY, EdgeSettings(), {}, REQUEST_FIELDS, "bulk")
    both = map_speech_request({**BODY, "priority": "interactive"}, EdgeSettings(), {}, REQUEST_FIELDS, "bulk")
    plain = map_speech_request(BODY, EdgeSettings(), {}, REQUEST_FIELDS)
    assert by_body.body["priority"] == "interactive" and by_header.body["priority"] == "bulk"
    assert both.body["priority"] == "interactive"  # the body's field wins over the header
    assert "priority" not in plain.body  # normal is the default: nothing to send
    request = by_header.request()
    assert isinstance(request, SynthesisRequest) and request.priority is Priority.BULK


@pytest.mark.parametrize(
    ("body", "header", "words"),
    [({"priority": "urgent"}, None, "priority must be one of"), ({}, "soon", "X-Tts-Priority must be one of")],
)
def test_a_bad_priority_is_refused_naming_where_it_came_from(body: dict, header: str | None, words: str) -> None:
    with pytest.raises(TtsError) as refused:
        map_speech_request({**BODY, **body}, EdgeSettings(), {}, REQUEST_FIELDS, header)
    assert refused.value.code is ErrorCode.INVALID_REQUEST and words in refused.value.message
    assert refused.value.detail == {"param": "priority"}


def test_deadline_unreachable_is_a_503_with_retry_after_that_sdks_retry() -> None:
    error = TtsError(ErrorCode.DEADLINE_UNREACHABLE, "late", "elsewhere", backend="piper", retry_after_ms=1500)
    status, headers, body = error_response(error)
    assert status == 503 and error.service_status == 503
    assert headers["Retry-After"] == "2" and headers["Retry-After-Ms"] == "1500"
    assert headers["x-should-retry"] == "true"
    assert body["error"]["code"] == "deadline_unreachable" and body["error"]["type"] == "server_error"
