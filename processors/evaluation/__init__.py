"""Evaluation: golden sets, metrics, reports and replay diffs (pure code; Kafka lives in ``streams.eval_*``)."""
