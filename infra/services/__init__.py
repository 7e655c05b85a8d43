"""One module per managed service; :mod:`infra.stack` runs them together."""
