"""Claim checking: whether the sources support, contradict or do not mention each sentence of an answer."""
