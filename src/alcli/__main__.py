"""``python -m alcli``."""

from alcli.cli import main

main()
