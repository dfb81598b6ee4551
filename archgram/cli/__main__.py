"""`python -m archgram.cli`: the archgram command line."""
from archgram.cli import main

main()
