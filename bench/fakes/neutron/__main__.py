"""C{python -m bench.fakes.neutron}: L{bench.fakes.neutron.cli.main}."""

from bench.fakes.neutron.cli import main

main()
