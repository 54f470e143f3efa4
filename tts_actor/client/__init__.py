"""TtsClient, what the translator and the CLI use, and its retry policy."""

from tts_actor.client.tts_client import TtsClient

__all__ = ["TtsClient"]
