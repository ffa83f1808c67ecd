"""C{python -m metaproxy.agent.workers}: one worker process, started by the agent."""

import sys

from metaproxy.agent.workers.worker import main

sys.exit(main())
