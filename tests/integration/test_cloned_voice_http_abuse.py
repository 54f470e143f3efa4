"""Trying to break cloned voices over the HTTP edge: hostile uploads and ids, a voice deleted mid-SSE.

The real uvicorn edge, service and nats-server; Chatterbox is the stand-in package of
tests/support/stand_in_chatterbox.py (its weights cannot run here), held between segments by
:class:`tests.support.cloning.GatedChatterbox`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from nats.aio.client import Client

from statemachine import State
from tests.support.backends import next_state, tone_wav
from tests.support.cloning import GatedChatterbox, chatterbox_settings
from tests.support.stand_in_chatterbox import findable_chatterbox, stand_in_chatterbox  # noqa: F401
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.http_edge.app import HttpEdge
from tts_actor.http_edge.edge_settings import EdgeSettings


async def test_hostile_uploads_and_ids_on_the_http_edge_get_openais_errors_and_it_keeps_serving(
    settings: Settings, nc: Client, tmp_path: Path
) -> None:
    """Malformed multipart, oversized and trickled parts, odd ids in paths, a double delete at once."""
    app = TtsApp(settings.with_(backends=("piper",), instance="solo"))
    edge = HttpEdge(settings, EdgeSettings(api_keys=("key-of-mallory",)), "127.0.0.1", 0)
    await app.start()
    await edge.start(nc)
    headers = {"Authorization": "Bearer key-of-mallory"}
    try:
        async with httpx2.AsyncClient(base_url=edge.url, headers=headers, timeout=30) as http:
            recording = {"recording": ("r.wav", tone_wav(2.0), "audio/wav")}
            consent = (
                await http.post("/v1/audio/voice_consents", data={"name": "m", "language": "en"}, files=recording)
            ).json()["id"]
            sample = ("s.wav", tone_wav(3.0), "audio/wav")
            mine = {"name": "x", "consent": consent}
            bad_forms: list[tuple[dict[str, Any], dict[str, Any], int]] = [
                (mine, {"audio_sample": ("s.mp3", b"ID3" + bytes(5000), "audio/mpeg")}, 400),  # not WAV
                (mine, {"audio_sample": ("s.wav", b"", "audio/wav")}, 400),
                (mine, {"audio_sample": ("s.wav", b"RIFF" + bytes(40), "audio/wav")}, 400),
                ({"name": "x"}, {"audio_sample": sample, "consent": ("c.txt", consent.encode(), "text/plain")}, 400),
                (mine | {"type": "design"}, {"audio_sample": sample}, 400),
                ({"name": "x" * 70_000, "consent": consent}, {"audio_sample": sample}, 400),
                ({f"f{n}": "v" for n in range(12)} | mine, {"audio_sample": sample}, 400),
                (mine, {"audio_sample": ("s.wav", bytes(11 * 1024 * 1024), "audio/wav")}, 413),
            ]
            for fields, files, status in bad_forms:
                reply = await http.post("/v1/audio/voices", data=fields, files=files)
                assert reply.status_code == status, (list(fields)[:3], reply.text[:300])
                error = reply.json()["error"]
                assert error["message"] and error["fix"] and error["type"], error
            raw = [
                ("multipart/form-data", b"--x\r\nno boundary declared\r\n--x--\r\n"),
                ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="name"\r\n'),
                ("multipart/form-data; boundary=x", b"\x00\xff" * 1000),
                ("multipart/form-data; boundary=" + "b" * 5000, b"--" + b"b" * 5000 + b"--\r\n"),
                ("application/json", b'{"name": "x", "consent": "' + consent.encode() + b'"}'),
            ]
            for content_type, body in raw:
                reply = await http.post("/v1/audio/voices", content=body, headers={"Content-Type": content_type})
                assert reply.status_code == 400, (content_type[:40], reply.text[:300])

            async def trickle() -> Any:  # no Content-Length: refused once past the limit, not read to the end
                chunk = bytes(1024 * 1024)
                for _ in range(12):
                    yield chunk

            reply = await http.post(
                "/v1/audio/voices",
                content=trickle(),
                headers={"Content-Type": "multipart/form-data; boundary=x"},
            )
            assert reply.status_code == 413, reply.text[:300]

            for odd in ("a" * 500, "voice_" + "Ä" * 32, "voice_..%2F..%2Fetc", "%00", "voice_" + "A" * 32):
                assert (await http.delete(f"/v1/audio/voices/{odd}")).status_code == 404, odd[:40]
                assert (await http.get(f"/v1/audio/voice_consents/{odd}")).status_code == 404, odd[:40]
                assert (await http.delete(f"/v1/audio/voice_consents/{odd}")).status_code == 404, odd[:40]
            for path in ("/v1/audio/voices/", "/v1/audio/voice_consents/"):  # an absurd id: a bounded 4xx, no crash
                too_long = await http.delete(path + "a" * 9000)
                assert too_long.status_code in (404, 413) and too_long.json()["error"]["fix"], too_long.text[:200]

            voice = (await http.post("/v1/audio/voices", data=mine, files={"audio_sample": sample})).json()["id"]
            twice = await asyncio.gather(*(http.delete(f"/v1/audio/voices/{voice}") for _ in range(2)))
            assert sorted(r.status_code for r in twice) == [200, 404], [r.text for r in twice]
            assert (await http.get("/v1/audio/voice_consents")).json()["data"][0]["id"] == consent  # still serving
    finally:
        await edge.stop()
        await app.stop()


@pytest.mark.usefixtures("findable_chatterbox")
async def test_an_sse_stream_whose_voice_is_deleted_ends_with_openais_error_event(
    settings: Settings, tmp_path: Path, nc: Client, client: TtsClient
) -> None:
    """Over the edge: the status (200) went out with the first delta, so the end is a speech.audio.error event."""
    own = chatterbox_settings(settings, tmp_path, require_consent=False)
    adapter = GatedChatterbox(own)
    app = TtsApp(own, adapters={"chatterbox": adapter})
    edge = HttpEdge(settings, EdgeSettings(), "127.0.0.1", 0)
    await app.start()
    await edge.start(nc)
    try:
        await next_state(app, "chatterbox", State.LOADED)
        voice = (await client.create_voice(tone_wav(3.0, hz=440.0), language="de"))["voice_profile"]
        text = " ".join(f"Das ist der Satz Nummer {n}, gesprochen in einer geklonten Stimme." for n in range(4))
        body = {"model": "chatterbox", "input": text, "voice": {"id": voice}, "stream_format": "sse"}
        async with httpx2.AsyncClient(base_url=edge.url, timeout=30) as http:
            speaking = asyncio.create_task(http.post("/v1/audio/speech", json=body | {"language": "de"}))
            assert await asyncio.to_thread(adapter.started.wait, 30), "the stream's second segment never started"
            assert await client.delete_voice(voice) == {"deleted": True}
            adapter.gate.set()
            reply = await speaking
        events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
        assert reply.status_code == 200 and events[0]["type"] == "speech.audio.delta", reply.text[:300]
        assert events[-1]["type"] == "speech.audio.error" and events[-1]["error"]["code"] == "unknown_voice", events[-1]
        assert "speech.audio.done" not in [e["type"] for e in events]
    finally:
        adapter.gate.set()
        await edge.stop()
        await app.stop()
