"""The HTTP edge names the API key it checked on the NATS requests it makes (``Tts-Key-Id``), never the key.

The real edge and service on a real nats-server; a plain subscriber on ``tts.voices`` sees each request's headers.
"""

from __future__ import annotations

import asyncio

import httpx2
from nats.aio.client import Client
from nats.aio.msg import Msg

from tts_actor.app import TtsApp
from tts_actor.client.caller import key_id
from tts_actor.config import Settings
from tts_actor.http_edge.app import HttpEdge
from tts_actor.http_edge.edge_settings import EdgeSettings


async def test_each_http_request_carries_the_id_of_its_own_key(settings: Settings, app: TtsApp, nc: Client) -> None:
    seen: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def listen(msg: Msg) -> None:
        await seen.put(dict(msg.headers or {}))

    await nc.subscribe("tts.voices", cb=listen)
    await nc.flush()
    edge = HttpEdge(settings, EdgeSettings(api_keys=("first-secret-key", "second-secret-key")), "127.0.0.1", 0)
    await edge.start(nc)
    try:
        async with httpx2.AsyncClient(base_url=edge.url) as http:
            for key in ("second-secret-key", "first-secret-key"):
                answer = await http.get("/v1/audio/voices", headers={"Authorization": f"Bearer {key}"})
                assert answer.status_code == 200, answer.text
                headers = await asyncio.wait_for(seen.get(), 5)
                assert headers.get("Tts-Key-Id") == key_id(key)
                assert not any(key in value for value in headers.values()), "the key itself went onto NATS"
            assert key_id("first-secret-key") != key_id("second-secret-key")
    finally:
        await edge.stop()
    open_edge = HttpEdge(settings, EdgeSettings(), "127.0.0.1", 0)  # no keys (loopback): no key id
    await open_edge.start(nc)
    try:
        async with httpx2.AsyncClient(base_url=open_edge.url) as http:
            assert (await http.get("/v1/audio/voices")).status_code == 200
            assert "Tts-Key-Id" not in await asyncio.wait_for(seen.get(), 5)
    finally:
        await open_edge.stop()
