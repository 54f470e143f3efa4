"""What travels on NATS: request messages, headers, reply framing, reply liveness."""
