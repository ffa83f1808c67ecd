"""The ``metaproxy`` command: haproxy configuration, the control client, config checks.

``metaproxy haproxy-config NAMESPACE``
    print the haproxy configuration for one namespace proxy, forwarding to that
    namespace's own socket (or, with ``--shared``, to Neutron's shared socket).
``metaproxy ctl {add,remove,list} [NAMESPACE ...]``
    add, remove or list the namespaces a running agent serves, over its control socket.
``metaproxy check-config``
    load the configuration and print the values that matter, or what is wrong with it.
``metaproxy health``
    ask a running agent's ``/healthz`` (on ``[metaproxy] metrics_listen``); exit 0 when
    healthy, 1 when not or when the agent cannot be asked (for the init system).
``metaproxy --version``
    print the installed package's version.

``python -m metaproxy`` is the same command.

Every subcommand exits with the same status for the same situation
(L{parser.EXIT_CODES}, in ``--help`` and docs/operations.md): 0 success; 1 the agent (or what
it depends on) cannot be reached, does not answer, answers an error or is unhealthy,
which may pass by itself; 2 the command cannot run as given: bad arguments, or a
configuration that cannot be loaded or lacks what the command needs (``check-config``
included), which only the operator can fix. User errors print one message, never a
traceback.

The subcommands live in their own modules (L{haproxy_config}, L{ctl}, L{check_config},
L{health}); L{parser} holds what they share (the top-level parser, the value types,
the exit statuses), L{failures} the errors they stop on, and L{command} the entry point.
"""

from metaproxy.cli.command import main

__all__ = ["main"]
