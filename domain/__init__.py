"""The domain: aggregates, their commands, events and rules. Knows nothing of HTTP, SQL or NATS."""
