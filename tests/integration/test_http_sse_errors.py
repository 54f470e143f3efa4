"""A failure after the first ``speech.audio.delta``: the SSE stream ends with a ``speech.audio.error`` event.

Real Piper behind the real edge; the engine is made to fail on its second call (a segment), after the
first segment's audio has gone out, so the HTTP status (200) is sent already when the error comes.
"""

from __future__ import annotations

import dataclasses
import json

import httpx2
from nats.aio.client import Client

from tests.support.helpers import GatedPiper, serving
from tts_actor.audio.pcm import Audio
from tts_actor.backends.base import Voice
from tts_actor.config import Settings
from tts_actor.http_edge.app import HttpEdge
from tts_actor.http_edge.edge_settings import EdgeSettings
from tts_actor.wire.messages import SynthesisRequest

THREE = "The first sentence is spoken. The second one fails in the engine. The third is never reached."


class FailsOnSecondSegment(GatedPiper):
    """Real Piper that cuts text into sentences and raises on its second engine call."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.spec = dataclasses.replace(self.spec, max_segment_chars=40)
        self.calls = 0

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("engine stand-in fails on its second segment")
        return super().synthesize(request, voice)


def events(body: str) -> list[dict[str, object]]:
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]


async def test_an_sse_stream_that_fails_part_way_ends_with_an_error_event(settings: Settings, nc: Client) -> None:
    engine = FailsOnSecondSegment(settings)
    async with serving(settings, engine):
        edge = HttpEdge(settings, EdgeSettings(), "127.0.0.1", 0)
        await edge.start(nc)
        try:
            body = {"model": "gated", "input": THREE, "voice": "alloy", "stream_format": "sse"}
            async with httpx2.AsyncClient(base_url=edge.url, timeout=60) as http:
                reply = await http.post("/v1/audio/speech", json=body)  # read whole: a cut stream would raise here
                assert reply.status_code == 200
                received = events(reply.text)
                # the stream goes on serving after it
                again = await http.post("/v1/audio/speech", json={**body, "input": "Still serving."})
        finally:
            await edge.stop()
    kinds = [e["type"] for e in received]
    assert kinds[0] == "speech.audio.delta" and kinds[-1] == "speech.audio.error", kinds
    assert "speech.audio.done" not in kinds
    error = received[-1]["error"]
    assert isinstance(error, dict)
    assert error["code"] == "synthesis_failed" and error["type"] == "server_error"
    assert error["message"] and error["fix"] and "param" in error
    assert again.status_code == 200 and events(again.text)[-1]["type"] == "speech.audio.done"
