"""The worker process: a Faust app whose agents run every stage (``main.run_worker`` starts it)."""
