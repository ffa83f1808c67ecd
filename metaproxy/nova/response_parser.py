# -*- test-case-name: tests.unit.nova.test_response_parser -*-
"""Nova's answers on one connection, parsed: sans-IO, bytes in, L{NovaResponse} out.

L{ResponseParser} reads the responses on one keep-alive connection with C{httptools}
(llhttp, in C, strict: no bare LF, no ambiguous framing). It keeps Nova's status, reason
phrase, raw headers and body bytes, knows the request was a C{HEAD} (no body follows)
and the body limit, and reports an answer that is not usable HTTP as L{ResponseError}
(L{BodyTooLarge} past the limit). The connection (L{metaproxy.nova.connection}) feeds it.
"""

from __future__ import annotations

import attrs
import httptools

__all__ = ["NovaResponse", "ResponseError", "BodyTooLarge", "ResponseParser"]

_NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()


@attrs.frozen
class NovaResponse:
    """Nova's answer, as received.

    @ivar status: The status code.
    @ivar reason: Nova's reason phrase (C{b"OK"}), possibly empty.
    @ivar headers: C{(name, value)} pairs exactly as Nova sent them: names in Nova's own
        capitalisation, in wire order, repeated headers kept where they appeared. The
        framing and connection headers (C{Content-Length}, C{Transfer-Encoding},
        C{Connection}, C{Keep-Alive}, ...) are included: a proxy relaying the answer drops
        the hop-by-hop ones (L{metaproxy.http.response.relay_response} does), and C{HEAD}'s
        C{Content-Length} tells the length of the resource. Values lose surrounding
        whitespace. Trailer fields of a chunked body are not included.
    @ivar body: The body bytes, de-chunked but otherwise byte-exact: a gzip body stays
        gzip.
    """

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class ResponseError(Exception):
    """Nova answered, but not with a usable response.

    The text completes the sentence "Nova metadata API at host:port ...", for example
    C{"sent an invalid response: Expected HTTP/"}.
    """


class BodyTooLarge(ResponseError):
    """The response body is, or is announced to be, over the limit."""


class _Stop(Exception):
    """Raised from an httptools callback to stop parsing (the outcome is on the parser)."""


class ResponseParser:
    """Parse the responses arriving on one connection, one request at a time.

    Call L{expect} after sending each request, then L{feed} each chunk of bytes received
    until it returns the L{NovaResponse}; if the connection ends first, L{eof} returns the
    response when its body was delimited by the close, or C{None}.

    Interim C{1xx} responses are skipped. After the response, L{keep_alive} tells whether
    the connection may carry another request: not when Nova said C{Connection: close},
    answered HTTP/1.0 without keep-alive, delimited the body by closing, sent bytes after
    the response, or the request was a C{HEAD} (httptools cannot be told that a C{HEAD}
    answer has no body, so parsing stops after its head and the parser is spent).

    @ivar started: Whether any byte of the current response has been fed.
    @ivar keep_alive: See above; meaningful once the response is complete.
    """

    __slots__ = (
        "_http",
        "_head",
        "_limit",
        "_status",
        "_reason",
        "_headers",
        "_body",
        "_size",
        "_in_head",
        "_delimited",
        "_length",
        "_response",
        "_error",
        "started",
        "keep_alive",
    )

    def __init__(self) -> None:
        self._http: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._head = False
        self._limit = 0
        self._response: NovaResponse | None = None
        self._error: ResponseError | None = None
        self.started = False
        self.keep_alive = False
        self._reset()

    def _reset(self) -> None:
        """Forget the message so far (a new request, or after an interim response)."""
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._in_head = True
        self._delimited = False
        self._length = 0

    def expect(self, head: bool, limit: int) -> None:
        """Get ready for the response to the request just sent.

        @param head: The request was a C{HEAD}: the response has no body.
        @param limit: The largest body accepted, in bytes.
        @raise RuntimeError: The parser is spent (after a C{HEAD} or an error).
        """
        if self._http is None or self._error is not None:
            raise RuntimeError("this connection cannot carry another request")
        self._head = head
        self._limit = limit
        self._response = None
        self.started = False
        self.keep_alive = False
        self._reset()

    def feed(self, data: bytes) -> NovaResponse | None:
        """Parse C{data}; the response once it is complete, else C{None}.

        @raise ResponseError: The bytes are not a usable response (the parser is then
            spent).
        """
        self.started = True
        try:
            self._http.feed_data(data)  # type: ignore[union-attr]
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            response = self._response
            if response is not None:
                # Complete, and then something odd (a HEAD answer's end, trailing bytes):
                # the response stands, the connection is not reused.
                self.keep_alive = False
                self._http = None
                return response
            if self._error is None:
                self._error = ResponseError(f"sent an invalid response: {_describe(e)}")
            self._http = None
            raise self._error from None
        return self._response

    def eof(self) -> NovaResponse | None:
        """The connection ended: the response if its body ran until the close, else
        C{None} (nothing, or an incomplete response, was received)."""
        if (
            self._response is None
            and self._error is None
            and not self._in_head
            and not self._delimited
            and self._status >= 200
        ):
            self._complete()
            self.keep_alive = False
        return self._response

    def close(self) -> None:
        """Release the C{httptools} parser (it refers back to this object)."""
        self._http = None

    # --- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._response is not None:
            # Another message after the response, unasked: stop there; the connection
            # is out of step and will not be reused.
            raise _Stop()

    def on_status(self, reason: bytes) -> None:
        self._reason += reason  # Called once per received fragment of the reason.

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # A trailer field after a chunked body: not part of the answer.
        value = value.rstrip(b" \t")
        self._headers.append((name, value))
        size = len(name)
        if size == 14 or size == 17:
            lower = name.lower()
            if lower == b"content-length":
                self._delimited = True
                self._length = int(value)  # llhttp checked it: digits, one value.
            elif lower == b"transfer-encoding":
                self._delimited = value.lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        self._in_head = False
        status = self._http.get_status_code()  # type: ignore[union-attr]
        self._status = status
        if status < 100:
            self._error = ResponseError(f"sent an invalid response: status {status:03d}")
            raise _Stop()
        if status < 200:
            return  # Interim: no body, the real response follows.
        if self._head:
            self._complete()
            raise _Stop()
        if self._length > self._limit:
            self._error = BodyTooLarge(
                f"announced a {self._length}-byte body; the limit is {self._limit} bytes"
            )
            raise _Stop()

    def on_body(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            self._body = []
            self._error = BodyTooLarge(f"sent a body over the limit of {self._limit} bytes")
            raise _Stop()
        self._body.append(data)

    def on_message_complete(self) -> None:
        status = self._status
        if status < 200:
            if status == 101:
                self._error = ResponseError(
                    "sent an invalid response: 101 Switching Protocols, not asked for"
                )
                raise _Stop()
            self._reset()
            return
        self.keep_alive = self._http.should_keep_alive()  # type: ignore[union-attr]
        self._complete()

    def _complete(self) -> None:
        headers = self._headers
        body = self._body
        self._response = NovaResponse(
            self._status,
            self._reason,
            tuple(headers) if headers else _NO_HEADERS,
            body[0] if len(body) == 1 else b"".join(body),
        )


def _describe(error: Exception) -> str:
    if isinstance(error, httptools.HttpParserUpgrade):
        return "unexpected protocol upgrade"
    return str(error) or error.__class__.__name__
