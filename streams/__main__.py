"""``python -m streams`` is the ``ragstream`` command."""

from streams.cli import main

main()
