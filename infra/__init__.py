"""Settings, and start/stop of the real services (Kafka, Redis, Milvus, Triton) for development and tests."""
