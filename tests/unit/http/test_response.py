"""Answers written to the namespace proxy: bytes out."""

import gzip

from metaproxy.http.response import error_response, relay_response


def split(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    return lines[0], lines[1:], body


def test_error_response_shape():
    """Agent errors use CRLF, Content-Length, Connection: close and upstream's wording."""
    data = error_response(404, "Instance was not found on network net_id.")
    status, headers, body = split(data)
    assert status == b"HTTP/1.1 404 Not Found"
    assert b"Connection: close" in headers
    assert b"Content-Type: text/plain; charset=UTF-8" in headers
    assert b"Content-Length: %d" % len(body) in headers
    assert b"<title>404 Not Found</title>" in body
    assert b"Instance was not found on network net_id." in body
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_retry_after_on_503():
    """503 carries Retry-After so cloud-init waits and retries."""
    _, headers, _ = split(error_response(503, "later", retry_after=2))
    assert b"Retry-After: 2" in headers


def test_relay_keeps_body_and_end_to_end_headers():
    """Nova's status, end-to-end headers and body are relayed; hop-by-hop ones are not."""
    body = bytes(range(256))
    data = relay_response(
        200,
        b"OK",
        [
            (b"Content-Type", b"application/octet-stream"),
            (b"Connection", b"keep-alive"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Length", b"999"),
            (b"X-Custom", b"1"),
        ],
        body,
    )
    status, headers, out = split(data)
    assert status == b"HTTP/1.1 200 OK"
    assert out == body
    assert b"Content-Type: application/octet-stream" in headers
    assert b"X-Custom: 1" in headers
    assert b"Content-Length: 256" in headers
    assert b"Connection: close" in headers
    assert not any(h.startswith((b"Transfer-Encoding", b"Connection: keep")) for h in headers)


def test_empty_200_has_content_length_zero():
    """An empty 200 (public-ipv4 without a floating IP) is Content-Length: 0, nothing more."""
    data = relay_response(200, b"OK", [(b"Content-Type", b"text/plain")], b"")
    assert data.endswith(b"Content-Length: 0\r\n\r\n")


def test_gzip_passed_through_by_default_and_decoded_on_request():
    """Gzipped user data reaches the instance byte-exact unless gzip_decode is set."""
    raw = gzip.compress(b"#cloud-config\n")
    _, _, body = split(relay_response(200, b"OK", [(b"Content-Encoding", b"gzip")], raw))
    assert body == raw
    _, headers, body = split(
        relay_response(200, b"OK", [(b"Content-Encoding", b"gzip")], raw, gzip_decode=True)
    )
    assert body == b"#cloud-config\n"
    assert not any(h.lower().startswith(b"content-encoding") for h in headers)


def test_head_keeps_length_without_body():
    """A HEAD answer keeps Nova's Content-Length and sends no body."""
    data = relay_response(200, b"OK", [(b"Content-Length", b"42")], b"", head_only=True)
    assert data.endswith(b"Content-Length: 42\r\n\r\n")


def test_error_answers_are_made_once():
    """The bytes of an error answer are kept: the same call gives the same object; any
    difference in status, message or Retry-After gives its own answer."""
    first = error_response(404, "Instance was not found on router r1.")
    assert error_response(404, "Instance was not found on router r1.") is first
    assert error_response(404, "Instance was not found on router r2.") != first
    assert error_response(503, "later", retry_after=1) != error_response(
        503, "later", retry_after=2
    )
    assert b"Retry-After" not in error_response(503, "later")
