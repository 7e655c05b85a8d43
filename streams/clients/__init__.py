"""Kafka clients any service can use the way ragstream's own commands do: ask, ingest, evaluate, replay, prompts."""
