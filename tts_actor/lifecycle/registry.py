"""The backends this instance runs, and routing a request to one of them.

Status, voices and routing are all derived from the adapters' declarations and
the actors' current states; nothing here waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from statemachine import State, StateEvent
from tts_actor.audio.admission import check_length, check_script
from tts_actor.backends import ADAPTERS, BackendAdapter, Voice
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.actor import BackendActor, ModelStore
from tts_actor.lifecycle.memory_guard import MemoryGuard
from tts_actor.observability import metrics
from tts_actor.wire.messages import SynthesisRequest


@dataclass(frozen=True)
class Route:
    """Where a request goes: the chosen actor and voice, and whom it stands in for."""

    actor: BackendActor
    voice: Voice
    fallback_from: str | None = None
    # when ``actor`` is loaded only on another instance: this instance's own choice, served if none answers
    local: Route | None = None


class Registry:
    """Actors by name, in the configured priority order."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore | None,
        on_event: Callable[[StateEvent], None],
        adapters: dict[str, BackendAdapter] | None = None,
    ) -> None:
        """``adapters`` replaces the built-in adapter for the names it holds (tests, plug-ins)."""
        self.settings = settings
        given = adapters or {}
        self.actors: dict[str, BackendActor] = {
            name: BackendActor(given.get(name) or ADAPTERS[name](settings), settings, store, on_event)
            for name in settings.backends
        }
        self.memory_guard = MemoryGuard(settings.max_rss_bytes, self.actors)
        if self.memory_guard.enabled:
            for actor in self.actors.values():
                actor.memory_guard = self.memory_guard
                actor.runner.after_job = self.memory_guard.check

    async def start(self) -> None:
        for actor in self.actors.values():
            actor.on_change(self._record_languages)
            await actor.start()
        self._record_languages()

    def _record_languages(self) -> None:
        """``tts_language_ready``: what the fleet-wide "language unserved" alert adds up across instances."""
        ready: dict[str, bool] = {}
        for actor in self.actors.values():
            for lang in actor.adapter.languages:
                ready[lang] = ready.get(lang, False) or actor.ready or actor.loads_on_demand
        metrics.record_languages(ready)

    def begin_shutdown(self) -> None:
        """From now on no actor starts anything new; what is queued is answered at once."""
        for actor in self.actors.values():
            actor.begin_shutdown()

    async def stop(self, deadline: float | None = None) -> None:
        """All actors at once, so shutdown takes one grace period, not one per backend.

        ``deadline`` (``time.monotonic()``) is when the shutdown's grace ends; default: one grace from now.
        """
        await asyncio.gather(*(actor.stop(deadline) for actor in self.actors.values()))

    @property
    def engine_call_abandoned(self) -> bool:
        return any(actor.engine_call_abandoned for actor in self.actors.values())

    def get(self, name: str) -> BackendActor:
        try:
            return self.actors[name]
        except KeyError:
            raise self.get_error(name) from None

    def get_error(self, name: str) -> TtsError:
        """The reply for a backend this instance does not run."""
        return TtsError(
            ErrorCode.UNKNOWN_BACKEND,
            f"unknown backend {name!r}",
            f"Use one of: {', '.join(self.actors)} (see tts.status).",
            detail={"backends": list(self.actors)},
        )

    def status(self) -> dict[str, object]:
        status: dict[str, object] = {
            "instance": self.settings.instance,
            "backends": [a.status() for a in self.actors.values()],
        }
        if self.memory_guard.enabled:
            status["memory_guard"] = self.memory_guard.status()
        return status

    def voices(self) -> dict[str, object]:
        return {
            "backends": {
                name: {
                    "state": actor.state.value,
                    "languages": {
                        lang: [v.to_dict() for v in actor.adapter.voices() if v.language == lang]
                        for lang in actor.adapter.languages
                    },
                }
                for name, actor in self.actors.items()
            }
        }

    def languages_on_offer(self) -> dict[str, list[str]]:
        offer: dict[str, list[str]] = {}
        for name, actor in self.actors.items():
            if actor.state is State.FAILED:
                continue
            for lang in actor.adapter.languages:
                offer.setdefault(lang, []).append(name)
        return offer

    def health(self) -> dict[str, object]:
        states = {name: a.state.value for name, a in self.actors.items()}
        loaded = [n for n, s in states.items() if s == State.LOADED.value]
        on_demand = [n for n, a in self.actors.items() if a.loads_on_demand]
        pending = [n for n, a in self.actors.items() if a.pending]
        status = "ok" if loaded else "idle" if on_demand else "starting" if pending else "unavailable"
        return {
            "status": status,
            "ready": bool(loaded or on_demand),  # an idle-unloaded backend loads on the next request
            "instance": self.settings.instance,
            "loaded": loaded,
            "on_demand": on_demand,
            "states": states,
        }

    def route(self, request: SynthesisRequest, elsewhere: frozenset[str] = frozenset()) -> Route:
        """Choose a backend and voice; raises a :class:`TtsError` when none fits.

        ``elsewhere``: backends loaded on other instances of the fleet; they count as loaded when
        choosing (the request then travels there, see :mod:`tts_actor.fleet.routing`); such a route
        carries in ``local`` what this instance serves itself if no instance answers, decided in the same call.
        """
        if request.backend:
            actor = self.get(request.backend)
            if request.language not in actor.adapter.languages:
                raise self._unsupported_language(request.language, actor.name)
            if request.clones and not actor.adapter.spec.supports_cloning:
                raise self._no_cloning(request.language, actor.name)
            return self._admit(request, Route(actor, self._voice(actor, request)))
        lang = request.language
        candidates = [
            self.actors[name]
            for name in self.settings.priority_for(lang)
            if name in self.actors and lang in self.actors[name].adapter.languages
        ]
        if request.clones and candidates:
            # only a backend that clones may take a reference voice; the others would ignore it
            candidates = [a for a in candidates if a.adapter.spec.supports_cloning]
            if not candidates:
                raise self._no_cloning(lang, None)
        if request.voice:
            candidates = [a for a in candidates if a.adapter.find_voice(request.voice)]
            if not candidates:
                raise self._unknown_voice(request.voice, lang)
        if not candidates:
            raise self._unsupported_language(lang, None)
        route = self._pick(candidates, request, elsewhere)
        if route.actor.ready or route.actor.name not in elsewhere:
            return route
        return dataclasses.replace(route, local=self._pick(candidates, request, frozenset()))

    def _pick(self, candidates: list[BackendActor], request: SynthesisRequest, elsewhere: frozenset[str]) -> Route:
        """The first loaded (here or ``elsewhere``), else the first that loads or can, else the first."""
        loaded = [a for a in candidates if a.ready or a.name in elsewhere]
        waitable = (a for a in candidates if a.pending or a.loads_on_demand)
        chosen = loaded[0] if loaded else next(waitable, candidates[0])
        fallback_from = candidates[0].name if chosen is not candidates[0] else None
        return self._admit(request, Route(chosen, self._voice(chosen, request), fallback_from))

    def _admit(self, request: SynthesisRequest, route: Route) -> Route:
        """Refuse at once text the chosen voice would spell out, or more speech than TTS_MAX_AUDIO_S.

        Before any job is queued, measured by the adapter's own ``spoken_cost`` (Piper: phonemes).
        """
        adapter, name = route.actor.adapter, route.actor.name
        check_script(request.text, route.voice.language, request.allow_script_mismatch, name)
        spec = adapter.spec
        check_length(
            lambda: adapter.spoken_cost(request.text, route.voice),
            spec.spoken_units_per_s,
            self.settings.max_audio_s,
            spec.spoken_unit,
            name,
        )
        return route

    def no_backend_ready(self, request: SynthesisRequest, first: BackendActor) -> TtsError:
        """The reply when no candidate for ``request`` is loaded: names every one's state."""
        states = {
            name: {"state": a.state.value, "reason": a.lifecycle.reason.value, "fix": a.lifecycle.fix}
            for name, a in self.actors.items()
            if request.language in a.adapter.languages
        }
        error = first.not_ready_error()
        if len(states) > 1 and not request.backend:
            error.detail = {"candidates": states}
        return error

    def _voice(self, actor: BackendActor, request: SynthesisRequest) -> Voice:
        if request.voice:
            voice = actor.adapter.find_voice(request.voice)
            if voice is None:
                raise self._unknown_voice(request.voice, request.language, actor)
            if voice.language != request.language:
                raise TtsError(
                    ErrorCode.UNKNOWN_VOICE,
                    f"voice {voice.id!r} speaks {voice.language!r}, not {request.language!r}",
                    f"Send language={voice.language!r}, or pick a voice from tts.voices.",
                    backend=actor.name,
                )
            return voice
        voice = actor.adapter.default_voice(request.language)
        if voice is None:
            raise self._unsupported_language(request.language, actor.name)
        return voice

    def _unknown_voice(self, voice: str, language: str, actor: BackendActor | None = None) -> TtsError:
        pool = [actor] if actor else list(self.actors.values())
        known = sorted(v.id for a in pool for v in a.adapter.voices() if v.language == language)
        return TtsError(
            ErrorCode.UNKNOWN_VOICE,
            f"voice {voice!r} is not offered for language {language!r}" + (f" by {actor.name}" if actor else ""),
            f"Use one of: {', '.join(known) or '(none)'}; `tts-actor voices` lists them all.",
            backend=actor.name if actor else None,
            detail={"voices": known},
        )

    def _no_cloning(self, language: str, backend: str | None) -> TtsError:
        cloners = sorted(name for name, a in self.actors.items() if a.adapter.spec.supports_cloning)
        where = f"backend {backend} does not" if backend else f"no enabled backend for {language!r} can"
        return TtsError(
            ErrorCode.INVALID_REQUEST,
            f"reference_audio or voice_profile was sent but {where} clone a voice",
            "Leave out reference_audio and voice_profile, or use a backend that clones: "
            f"{', '.join(cloners) or '(none enabled)'} (TTS_BACKENDS, TTS_LANGUAGE_PRIORITY).",
            backend=backend,
        )

    def _unsupported_language(self, language: str, backend: str | None) -> TtsError:
        offer = self.languages_on_offer()
        where = f"backend {backend}" if backend else "any enabled backend"
        return TtsError(
            ErrorCode.UNSUPPORTED_LANGUAGE,
            f"language {language!r} is not supported by {where}; on offer: {', '.join(sorted(offer)) or '(none)'}",
            "Send one of the languages on offer, or enable a backend that speaks it (TTS_BACKENDS).",
            backend=backend,
            detail={"languages": offer},
        )
