"""When a new job's first audio would come: the work queued ahead of it at the backend's measured pace (pure).

Work is measured as the engine measures text (the adapter's ``spoken_cost``: Piper counts phonemes)
turned into seconds of audio by the backend's ``spoken_units_per_s``, and audio into engine seconds
by the real-time factor learned from recent segments. Ahead of a new job: the segments in the
engine now (less what they have run), every queued job of its own class and the higher ones, and the
rest of a running job of those classes; spread over the backend's workers; then its own first
segment. Before the backend has spoken anything there is no pace to go by: no estimate, no refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tts_actor.backends.base import BackendAdapter
from tts_actor.lifecycle.jobs import SynthesisJob


@dataclass(frozen=True)
class WaitEstimate:
    """What admission decided on: seconds until the first audio, and what it is made of."""

    first_audio_s: float
    ahead_audio_s: float  # seconds of audio to be spoken before this job's first segment starts
    ahead_jobs: int
    ahead_segments: int
    rtf: float

    def to_detail(self) -> dict[str, object]:
        return {
            "estimated_first_audio_ms": round(self.first_audio_s * 1000),
            "ahead": {
                "jobs": self.ahead_jobs,
                "segments": self.ahead_segments,
                "audio_s": round(self.ahead_audio_s, 2),
            },
            "rtf": round(self.rtf, 4),
        }


def segment_audio_s(job: SynthesisJob, adapter: BackendAdapter) -> list[float]:
    """Estimated seconds of audio per segment of ``job``, computed once and kept on the job."""
    if job.audio_estimate_s is None:
        per_s = adapter.spec.spoken_units_per_s or 1.0
        job.audio_estimate_s = [adapter.spoken_cost(s.text, job.voice) / per_s for s in job.segments]
    return job.audio_estimate_s


def estimate_first_audio(
    job: SynthesisJob,
    ahead: Sequence[SynthesisJob],
    running: Sequence[tuple[SynthesisJob, float]],
    rtf: float | None,
    workers: int,
    adapter: BackendAdapter,
) -> WaitEstimate | None:
    """Seconds until ``job``'s first audio; None before the backend's pace is measured.

    ``ahead``: queued jobs of ``job``'s class and higher; ``running``: (job, seconds in the engine so far).
    """
    if rtf is None:
        return None
    audio_ahead = 0.0
    segments = 0
    engine_s = 0.0
    for other in ahead:
        rest = segment_audio_s(other, adapter)[other.next_segment :]
        audio_ahead += sum(rest)
        segments += len(rest)
    for other, elapsed_s in running:
        costs = segment_audio_s(other, adapter)
        current = costs[other.next_segment] if other.next_segment < len(costs) else 0.0
        engine_s += max(0.0, current * rtf - elapsed_s)
        audio_ahead += current
        segments += 1
        if other.priority.rank <= job.priority.rank:  # its next segments go before this job too
            rest = costs[other.next_segment + 1 :]
            audio_ahead += sum(rest)
            engine_s += sum(rest) * rtf
            segments += len(rest)
    engine_s += sum(sum(segment_audio_s(o, adapter)[o.next_segment :]) for o in ahead) * rtf
    own = segment_audio_s(job, adapter)[0] * rtf if job.segments else 0.0
    first_audio_s = engine_s / max(1, workers) + own
    return WaitEstimate(first_audio_s, audio_ahead, len(ahead) + len(running), segments, rtf)
