"""The errors a subcommand stops on: one message for the operator, one exit status.

L{metaproxy.cli.command.main} prints the message (never a traceback) and exits with the
status: L{EXIT_FAILED} when the agent or what it depends on failed, L{EXIT_USAGE} when
the command cannot run as given.
"""

from __future__ import annotations

from metaproxy.cli.parser import EXIT_FAILED

__all__ = ["CommandFailed", "AgentUnreachable"]


class CommandFailed(Exception):
    """A user error: print the message, exit with ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AgentUnreachable(CommandFailed):
    """The agent cannot be connected to: no use going on with the next namespace."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_FAILED)
