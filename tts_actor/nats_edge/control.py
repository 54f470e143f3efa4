"""``tts.control.<backend>.<action>`` and ``tts.cancel``: subjects every instance receives (no queue group).

Control acts on this instance's own actor, each command in a task of its own so that an unload waiting
for a long synthesis blocks no other. Cancel is acted on, and answered, only by the instance serving
the request; the others stay silent, so a caller that hears nothing within a short bound knows no
instance has it (:meth:`tts_actor.client.tts_client.TtsClient.cancel` says so).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.registry import Registry
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.pipeline import SynthesisPipeline
from tts_actor.wire.framing import error_headers

log = get_logger(__name__)


class ControlEndpoints:
    """Retry/unload a backend here; cancel a request served here."""

    def __init__(self, nc: Client, registry: Registry, settings: Settings, pipeline: SynthesisPipeline) -> None:
        self.nc = nc
        self.registry = registry
        self.settings = settings
        self.pipeline = pipeline
        self.tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """Commands still running are cancelled (each answers that the instance is shutting down)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def on_control(self, msg: Msg) -> None:
        """Each command in a task of its own: an unload waiting for a long synthesis blocks no other."""
        task = asyncio.create_task(self._control(msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _control(self, msg: Msg) -> None:
        _, backend, action = msg.subject.rsplit(".", 2)
        try:
            actor = self.registry.get(backend)
            if action == "retry":
                actor.retry()
                result: dict[str, Any] = {"ok": True, "state": actor.state.value, "pending": actor.pending}
            elif action == "unload":
                unloading = actor.request_unload()
                if unloading is not None and actor.busy:  # the engine is speaking: say so now, not in 5 s
                    result = {"ok": True, "state": actor.state.value, "pending": True}
                    result["message"] = "unloading after the current synthesis; new requests wait or go elsewhere"
                else:
                    unloaded = unloading is not None and await unloading
                    result = {"ok": unloaded, "state": actor.state.value}
            else:
                raise TtsError(
                    ErrorCode.INVALID_REQUEST,
                    f"unknown control action {action!r}",
                    "Use tts.control.<backend>.retry or tts.control.<backend>.unload.",
                )
        except TtsError as error:
            await self._reply_error(msg, error)
            return
        except asyncio.CancelledError:  # shutdown: still answer
            await self._reply_error(
                msg, TtsError(ErrorCode.INTERNAL, "instance shutting down", "Send it again; another instance may act.")
            )
            raise
        except Exception as exc:  # never leave a control caller without an answer
            log.exception("control_failed", backend=backend, action=action)
            await self._reply_error(
                msg, TtsError(ErrorCode.INTERNAL, f"{action} failed: {type(exc).__name__}", "See the service log.")
            )
            return
        result["instance"] = self.settings.instance
        result["backend"] = backend
        log.info("control", backend=backend, action=action, **{k: v for k, v in result.items() if k != "backend"})
        if msg.reply:
            await self.nc.publish(msg.reply, json.dumps(result).encode())

    async def on_cancel(self, msg: Msg) -> None:
        """``{"request_id": ...}``: stop that request now; its engine stops at the next segment."""
        try:
            request_id = json.loads(msg.data).get("request_id")
        except (ValueError, AttributeError):
            request_id = None
        if not isinstance(request_id, str) or not self.pipeline.cancel(request_id):
            return  # another instance's request, or already done: only the one serving it answers
        log.info("synthesis_cancelled", request_id=request_id)
        if msg.reply:
            body = {"ok": True, "request_id": request_id, "instance": self.settings.instance}
            await self.nc.publish(msg.reply, json.dumps(body).encode())

    async def _reply_error(self, msg: Msg, error: TtsError) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, json.dumps(error.to_dict()).encode(), headers=error_headers(error))
