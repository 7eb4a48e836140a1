"""``python -m admmsearch`` runs the command line."""

from .cli import main

main()
