"""`python -m osimage` runs the `osimage` command."""

from osimage.cli import main

main()
