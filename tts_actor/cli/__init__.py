"""The ``tts-actor`` command: serve, client commands, doctor, fetch."""
