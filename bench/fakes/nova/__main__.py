"""C{python -m bench.fakes.nova}: L{bench.fakes.nova.cli.main}."""

from bench.fakes.nova.cli import main

main()
