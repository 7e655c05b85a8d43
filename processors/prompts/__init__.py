"""Versioned prompt templates: the registry's state machine and the templates that ship with ragstream."""
