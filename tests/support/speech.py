"""Real Piper speech (the joe voice) for tests and the bench, straight from ``PiperVoice``, without the service."""

from __future__ import annotations

import functools
from typing import Any

from tts_actor.audio.pcm import Audio
from tts_actor.backends.piper import discover_voices

# twenty everyday sentences of different lengths and sounds: the watermark's detection and false-positive corpus
TWENTY_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you get this message.",
    "The meeting has been moved to Thursday at three in the afternoon.",
    "I will be there in about twenty minutes, the traffic is terrible.",
    "Could you send me the report before the end of the day?",
    "Thank you so much for your help yesterday, it really made a difference.",
    "The train to Berlin leaves from platform seven.",
    "Do not forget to bring your passport and a printed copy of the ticket.",
    "Yes.",
    "The weather tomorrow will be cloudy with a chance of light rain in the evening.",
    "She said the package arrived, but the box was completely empty.",
    "Our new office is on the fourth floor, right next to the elevators.",
    "Can we reschedule our call for next week?",
    "The doctor will see you now.",
    "Happy birthday! I hope you have a wonderful day with your family.",
    "Turn left at the second traffic light and the hotel is on your right.",
    "The invoice number is four, seven, two, nine, one.",
    "Why did nobody tell me that the flight was cancelled?",
    "We are sorry for the inconvenience and appreciate your patience.",
    "Good night, and sleep well.",
)


@functools.cache
def joe() -> Any:
    """The joe voice, loaded once per test process."""
    from piper import PiperVoice

    files = discover_voices(None)[0]
    return PiperVoice.load(files.model, config_path=files.config)


def speak(text: str) -> Audio:
    """``text`` as 16-bit PCM from the joe voice."""
    voice = joe()
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text))
    return Audio(pcm, voice.config.sample_rate)
