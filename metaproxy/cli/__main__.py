"""C{python -m metaproxy.cli}: the C{metaproxy} command."""

import sys

from metaproxy.cli.command import main

sys.exit(main())
