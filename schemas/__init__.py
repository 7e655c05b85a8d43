"""Every event type and the wire codec: the one source of truth for what travels on Kafka."""
