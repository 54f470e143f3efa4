"""TtsClient, what the translator and the CLI use, and its retry policy."""

from tts_actor.client.reply import NoResponders, SynthesisReply
from tts_actor.client.stream import AudioStream
from tts_actor.client.tts_client import TtsClient

__all__ = ["AudioStream", "NoResponders", "SynthesisReply", "TtsClient"]
