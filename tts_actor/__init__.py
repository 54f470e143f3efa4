"""tts-actor: text-to-speech over NATS, with explicit backend state machines."""

__version__ = "0.1.0"
