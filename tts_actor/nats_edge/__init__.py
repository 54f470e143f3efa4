"""The NATS edge: connection, embedded server, the micro service and its endpoints."""
