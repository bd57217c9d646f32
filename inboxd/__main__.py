"""`python -m inboxd`: the same as the `inboxd` command."""

from .cli import main

main()
