"""C{python -m bench.scale}: L{bench.scale.cli.main}."""

import sys

from bench.scale.cli import main

sys.exit(main())
