"""C{python -m metaproxy}: the C{metaproxy} command (L{metaproxy.cli})."""

import sys

from metaproxy.cli import main

sys.exit(main())
