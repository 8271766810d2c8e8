"""``python -m alcli.cli``, as before the command line was a package."""

from alcli.cli import main

main()
