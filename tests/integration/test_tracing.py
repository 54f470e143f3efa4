"""Tracing across NATS: the caller's trace context continues into the service's synthesis span."""

from __future__ import annotations

from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.wire.messages import SynthesisRequest


async def test_trace_context_crosses_nats_into_the_synthesis_span(
    spans, piper_loaded: TtsApp, client: TtsClient
) -> None:
    from opentelemetry import trace

    with trace.get_tracer("translator").start_as_current_span("translate") as caller:
        await client.synthesize(SynthesisRequest(text="Traced."))
    caller_ctx = caller.get_span_context()
    served = [
        s
        for s in spans.get_finished_spans()
        if s.name == "tts.synthesize" and s.context.trace_id == caller_ctx.trace_id
    ]
    assert len(served) == 1, "the service span continues the caller's trace"
    span = served[0]
    assert span.parent is not None and span.parent.span_id == caller_ctx.span_id
    assert span.attributes["tts.backend"] == "piper" and span.attributes["tts.audio_seconds"] > 0
    assert any(s.name == "tts.load" and s.attributes.get("tts.backend") == "piper" for s in spans.get_finished_spans())
