"""`python -m lenstrt ...`: the same as the `lenstrt` command (torchrun launches `-m lenstrt train`)."""

from lenstrt.cli.main import main

main()
