"""Reading the PEM files that TLS options name: one reader for every TLS user.

L{read_pem_file} reads a whole file or raises L{UnreadablePemFile}, which keeps what the
file is for, its path and the operating system's reason, so that each user words its
own message (OVSDB's C{ssl:} remotes and the HTTPS connections to Nova say it
differently). Parsing the PEM is left to the user: each needs different objects.
"""

from __future__ import annotations

__all__ = ["UnreadablePemFile", "read_pem_file"]


class UnreadablePemFile(ValueError):
    """A PEM file cannot be opened or read.

    str() is C{cannot read <what> '<path>': <reason>}.

    @ivar what: what the file is for, e.g. C{"CA file"}.
    @ivar path: the path as configured.
    @ivar reason: the operating system's reason (C{strerror}, or the error itself when
        it has none).
    """

    def __init__(self, what: str, path: str, reason: str) -> None:
        super().__init__(f"cannot read {what} {path!r}: {reason}")
        self.what = what
        self.path = path
        self.reason = reason


def read_pem_file(path: str, what: str) -> bytes:
    """The bytes of C{path}, not parsed.

    @param what: what the file is for, named in the error.
    @raise UnreadablePemFile: the file cannot be opened or read.
    """
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UnreadablePemFile(what, path, e.strerror or str(e)) from None
