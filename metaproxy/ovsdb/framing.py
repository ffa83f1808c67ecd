"""Splitting a byte stream into the JSON values it carries (RFC 7047 section 4: a
JSON-RPC connection is a sequence of JSON objects with nothing between them).

L{JsonSplitter} is a plain object: C{feed(bytes)} returns the complete values received
so far, as bytes (not decoded: the caller decodes them). Only objects and arrays are
accepted at the top level, as OVSDB sends nothing else; whitespace between values is
skipped. A value larger than C{max_bytes}, or a byte that cannot start a value, raises
L{FramingError}: the connection cannot be trusted any more and must be closed.
"""

from __future__ import annotations

import re

__all__ = ["FramingError", "JsonSplitter"]

# outside strings, only these bytes matter; inside, only a quote or a backslash
_STRUCTURE = re.compile(rb'["{}\[\]]')
_IN_STRING = re.compile(rb'["\\]')
_SPACE = b" \t\r\n"


class FramingError(Exception):
    """The stream is not a sequence of JSON objects or arrays (or one is too large)."""


class JsonSplitter:
    """Incremental splitter of concatenated JSON objects and arrays.

    @param max_bytes: the largest value accepted.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self._buffer = bytearray()
        self._scan = 0  # where scanning resumes in _buffer
        self._depth = 0  # brackets open in the current value
        self._in_string = False
        self._max_bytes = max_bytes

    @property
    def pending(self) -> int:
        """Bytes of an incomplete value held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add C{data}; return every value it completes, in order.

        @raise FramingError: a byte outside any value that cannot start one, or a
            value over C{max_bytes}.
        """
        buffer = self._buffer
        buffer += data
        values: list[bytes] = []
        pos = self._scan
        end = len(buffer)
        while pos < end:
            if self._depth == 0:
                # between values: skip whitespace, then expect { or [
                while pos < end and buffer[pos] in _SPACE:
                    pos += 1
                if pos == end:
                    break
                first = buffer[pos]
                if first not in b"{[":
                    raise FramingError(
                        f"expected a JSON object or array, got byte {bytes([first])!r}"
                    )
                if pos:
                    del buffer[:pos]
                    end -= pos
                    pos = 0
                self._depth = 1
                pos += 1
                continue
            if self._in_string:
                match = _IN_STRING.search(buffer, pos)
                if match is None:
                    pos = end
                    break
                pos = match.end()
                if buffer[pos - 1] == 0x5C:  # backslash: the next byte is escaped
                    if pos == end:
                        pos -= 1  # look at the backslash again when more arrives
                        break
                    pos += 1
                else:
                    self._in_string = False
                continue
            match = _STRUCTURE.search(buffer, pos)
            if match is None:
                pos = end
                break
            pos = match.end()
            char = buffer[pos - 1]
            if char == 0x22:  # "
                self._in_string = True
            elif char in b"{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    values.append(bytes(buffer[:pos]))
                    del buffer[:pos]
                    end -= pos
                    pos = 0
        self._scan = pos
        if len(buffer) > self._max_bytes:
            raise FramingError(f"a JSON value is larger than {self._max_bytes} bytes")
        if self._depth == 0 and pos == end and buffer:
            # only whitespace left
            del buffer[:]
            self._scan = 0
        return values
