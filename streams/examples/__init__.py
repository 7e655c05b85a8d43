"""Runnable examples shown in the README; tests execute each one against the real stack."""
