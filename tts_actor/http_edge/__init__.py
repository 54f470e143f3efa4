"""The HTTP edges: the OpenAI-compatible API (a NATS client) and the orchestrator probes."""
