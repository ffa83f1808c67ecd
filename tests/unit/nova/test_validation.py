"""Unit tests for L{metaproxy.nova.validation}: the Nova URL and the request head, no I/O.

The client's own tests (test_nova.py) check the same rules through
L{metaproxy.nova.client.NovaClient}: refused before anything is sent or queued.
"""

from __future__ import annotations

import pytest

from metaproxy.nova.validation import REQUEST_HEAD, check_url, parse_base_url, refusal

SECRET_VALUE = b"0123456789abcdef-signature"


@pytest.mark.parametrize(
    "url, parts",
    [
        ("http://nova.example", ("http", "nova.example", 80, "")),
        ("https://nova.example", ("https", "nova.example", 443, "")),
        ("http://127.0.0.1:8775", ("http", "127.0.0.1", 8775, "")),
        ("https://[fd00::1]:8443/nova/", ("https", "fd00::1", 8443, "/nova")),
        ("http://NOVA.Example:8775/a/b", ("http", "nova.example", 8775, "/a/b")),
    ],
)
def test_parse_base_url(url, parts):
    """Scheme, lower-cased host (an IPv6 literal without brackets), the port or the
    scheme's default, and the path prefix without its trailing slash."""
    assert parse_base_url(url) == parts
    assert check_url(url) is None


@pytest.mark.parametrize(
    "url, problem",
    [
        ("ftp://nova:21", "Nova URL must be http:// or https://, not 'ftp://nova:21'"),
        ("nova:8775", "Nova URL must be http:// or https://, not 'nova:8775'"),
        ("http://", "Nova URL has no host: 'http://'"),
        ("http://nova:notaport", "invalid Nova URL 'http://nova:notaport': "),
        ("http://u:p@nova", "Nova URL must be scheme://host[:port][/prefix]: 'http://u:p@nova'"),
        ("http://nova/?q", "Nova URL must be scheme://host[:port][/prefix]: 'http://nova/?q'"),
        ("http://nova/#f", "Nova URL must be scheme://host[:port][/prefix]: 'http://nova/#f'"),
        ("http://nové", "Nova URL must be ASCII (use the IDNA form): 'http://nové'"),
        ("http://nova/a b", "Nova URL path must be printable ASCII: 'http://nova/a b'"),
    ],
)
def test_a_url_that_cannot_be_a_nova_endpoint_says_why(url, problem):
    """check_url answers the sentence parse_base_url fails with, naming the URL."""
    with pytest.raises(ValueError) as raised:
        parse_base_url(url)
    assert str(raised.value).startswith(problem)
    answer = check_url(url)
    assert answer is not None and answer.startswith(problem)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /latest/meta-data/ HTTP/1.1\r\nHost: nova.example:8775\r\n\r\n",
        b"GET /x?y=1 HTTP/1.1\r\nHost: [fd00::1]:8775\r\n"
        b"X-Forwarded-For: 10.0.0.5, \t10.0.0.6 \xff\r\nX-Instance-ID: i-1\r\n\r\n",
        b"POST /openstack/latest/password HTTP/1.1\r\nHost: nova\r\nContent-Length: 17\r\n\r\n",
    ],
)
def test_well_formed_heads_match(head):
    assert REQUEST_HEAD.fullmatch(head) is not None


@pytest.mark.parametrize(
    "head",
    [
        b"G T /x HTTP/1.1\r\nHost: nova\r\n\r\n",  # not a token
        b"GET x HTTP/1.1\r\nHost: nova\r\n\r\n",  # not origin form
        b"GET /a b HTTP/1.1\r\nHost: nova\r\n\r\n",  # a space in the target
        b"GET /x HTTP/1.1\r\nHost: nova\r\nconnection: close\r\n\r\n",  # reserved, any case
        b"GET /x HTTP/1.1\r\nHost: nova\r\nTE: trailers\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: nova\r\nX Bad: 1\r\n\r\n",  # not a token
        b"GET /x HTTP/1.1\r\nHost: nova\r\nX-Bad: a\x00b\r\n\r\n",  # a control in a value
        b"GET /x HTTP/1.1\r\nHost: nova\r\n",  # no empty line
        b"GET /x HTTP/1.0\r\nHost: nova\r\n\r\n",
    ],
)
def test_malformed_heads_do_not_match(head):
    assert REQUEST_HEAD.fullmatch(head) is None


@pytest.mark.parametrize(
    "method, target, headers, reason",
    [
        (b"G T", b"/x", [], "invalid method: b'G T'"),
        (b"", b"/x", [], "invalid method: b''"),
        (b"GET", b"latest", [], "request-target must be in origin form: b'latest'"),
        (b"GET", b"/a b", [], "request-target must be in origin form: b'/a b'"),
        (
            b"GET",
            b"/x",
            [(b"Content-Length", b"1")],
            "header b'Content-Length' is set by NovaClient",
        ),
        (b"GET", b"/x", [(b"X-Ok", b"1"), (b"HOST", b"n")], "header b'HOST' is set by NovaClient"),
        (b"GET", b"/x", [(b"X Bad", b"1")], "invalid header name: b'X Bad'"),
        (
            b"GET",
            b"/x",
            [(b"X-Instance-ID-Signature", SECRET_VALUE + b"\r\nX-Injected: 1")],
            "invalid bytes in the value of header b'X-Instance-ID-Signature'",
        ),
    ],
)
def test_refusal_names_the_first_wrong_part(method, target, headers, reason):
    """The reason for a refused request names the method, target or header at fault,
    never a header's value (it may be the signature)."""
    answer = refusal(method, target, headers)
    assert answer == reason
    assert SECRET_VALUE.decode() not in answer
