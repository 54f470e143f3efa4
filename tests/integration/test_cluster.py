"""Past one machine: a three-node cluster (ops/cluster), two instances on different nodes, one node killed."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import nats

from tests.support.backends import tone_wav
from tests.support.cluster import LoopbackCluster
from tests.support.helpers import eventually, wav_info
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import TtsError
from tts_actor.synthesis.profiles import ProfileStore
from tts_actor.wire.messages import SynthesisRequest


async def _retry(make, timeout_s: float = 20.0):
    """Test-side: JetStream elects new stream leaders after a node dies; retry a read through that."""
    answers, errors = [], []

    async def answered() -> bool:
        try:
            answers.append(await make())
        except TtsError as exc:
            errors.append(exc)
            return False
        return True

    await eventually(answered, timeout_s, interval_s=0.25, explain=lambda: errors[-1:])
    return answers[0]


async def test_synthesis_and_replicated_stores_survive_a_node(tmp_path: Path, settings: Settings) -> None:
    cluster = LoopbackCluster(tmp_path / "cluster")
    await asyncio.to_thread(cluster.start)
    n1, n2, n3 = cluster.nodes
    apps = [
        TtsApp(settings.with_(nats_url=n1.url, instance="east", backends=("piper",), js_replicas=3)),
        TtsApp(settings.with_(nats_url=n2.url, instance="west", backends=("piper",), js_replicas=3)),
    ]
    nc = None
    try:
        for app in apps:
            await app.start()
        for app in apps:
            assert app.registry is not None
            assert (await app.registry.actors["piper"].wait_settled(30)).value == "loaded"
        nc = await nats.connect(n3.url, connect_timeout=2)
        client = TtsClient(nc, timeout_s=30)
        first = await client.synthesize(SynthesisRequest(text="Three nodes, one fleet."))
        assert wav_info(first.audio).duration_s > 0.5
        consent = await client.create_consent(tone_wav(1.0), "a speaker", "en-US")
        profile_id = (await client.create_voice(tone_wav(2.0), consent=consent["id"]))["voice_profile"]
        for bucket in (settings.profiles_bucket, settings.consents_bucket):  # both replicated like the fleet's state
            info = await nc.jetstream().stream_info(f"OBJ_{bucket}")
            assert info.config.num_replicas == 3
        listed: set[str] = set()

        async def both_listed() -> bool:  # each put reaches the R3 bucket on its own time (replicas may serve reads)
            nonlocal listed
            listed = {i["instance"] for i in (await client.status())["fleet"]["instances"]}
            return listed == {"east", "west"}

        await eventually(both_listed, timeout_s=20, interval_s=0.1, explain=lambda: listed)
        kv_info = await nc.jetstream().stream_info(f"KV_{settings.kv_bucket}")
        assert kv_info.config.num_replicas == 3

        await asyncio.to_thread(cluster.kill, n1)  # east's node, and maybe a JetStream leader
        east = apps[0]
        # a request already routed towards the dead node is lost (NATS is at most once; the client's
        # retry covers it): the claim here is that the fleet answers once the survivors have noticed
        assert east.nc is not None

        def east_moved() -> bool:  # rejoined through another node (it learnt them from the cluster)
            url = east.nc.connected_url if east.nc is not None and east.nc.is_connected else None
            return url is not None and url.port in (n2.client_port, n3.client_port)

        await eventually(east_moved, timeout_s=30)
        await nc.flush()

        for i in range(4):  # every request answered with audio, by west or by east once it has moved
            reply = await client.synthesize(SynthesisRequest(text=f"Still here, number {i}."))
            assert wav_info(reply.audio).duration_s > 0.5
        store = ProfileStore(nc, settings)
        profile = await _retry(lambda: store.get(profile_id))  # R3: the clip outlived the node
        assert wav_info(profile.audio).duration_s == 2.0
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        for app in apps:  # each one, whatever the other's stop did
            with contextlib.suppress(Exception):
                await app.stop()
        await asyncio.to_thread(cluster.stop)
