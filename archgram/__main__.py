"""`python -m archgram`: the same CLI as the `archgram` script (handy in a git worktree)."""
from archgram.cli import main

main()
