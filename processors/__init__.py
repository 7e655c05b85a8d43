"""Pipeline stages as plain typed async code: no Kafka in sight, so each is tested and benchmarked directly."""
