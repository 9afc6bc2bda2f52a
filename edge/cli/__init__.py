"""``happysad-edge``: the parser (:mod:`.parser`), the commands, ``doctor``."""

from happysad.edge.cli.parser import main

__all__ = ["main"]
