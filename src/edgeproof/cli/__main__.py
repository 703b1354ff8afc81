"""``python -m edgeproof.cli`` runs the command line."""

from edgeproof.cli import main

main()
