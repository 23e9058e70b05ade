"""`python -m arpo`: the `arpo` command."""

from arpo.cli import main

main()
