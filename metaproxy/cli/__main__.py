"""C{python -m metaproxy.cli}: the C{metaproxy} command."""

import sys

from metaproxy.cli import main

sys.exit(main())
