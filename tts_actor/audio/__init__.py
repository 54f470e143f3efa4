"""Audio as data: PCM, the text segmenter and the codecs. No NATS, no engines."""
