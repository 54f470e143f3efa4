"""The fleet over the state KV: the codec and watcher, the publisher, the fleet view, interest routing."""
