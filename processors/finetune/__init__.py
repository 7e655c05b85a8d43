"""Fine-tuning LoRA adapters for a tenant: training set, evaluation gate and adapter registry (no Kafka)."""
