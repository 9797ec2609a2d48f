"""Digest authentication against the published examples (RFC 2617 §3.5, RFC 7616 §3.9.1)."""

from __future__ import annotations

import pytest

from dispatchd.channels.hotline.voice.digest import DigestError, authorization, parse_challenge, response


def test_rfc2617_example() -> None:
    """Mufasa's request of RFC 2617 §3.5 (MD5, qop=auth) gives the response printed there."""
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",'
        ' opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    got = response(
        challenge,
        username="Mufasa",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="0a4f113b",
        nc=1,
    )
    assert got == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    """RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256."""
    challenge = parse_challenge(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm},'
        ' nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    got = response(
        challenge,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        nc=1,
    )
    assert got == expected


def test_header_for_a_sip_trunk_without_qop() -> None:
    """A trunk's plain challenge (no qop, as many SIP proxies send) is answered RFC 2069 style, with
    the opaque echoed and quotes escaped."""
    challenge = parse_challenge('Digest realm="trunk", nonce="abc", opaque="o\\"x"')
    header = authorization(
        challenge,
        username="dispatchd",
        password="secret",
        method="INVITE",
        uri="sip:13800000000@trunk",
        cnonce="c",
    )
    assert header.startswith(
        'Digest username="dispatchd", realm="trunk", nonce="abc", uri="sip:13800000000@trunk"'
    )
    assert "qop" not in header and 'opaque="o\\"x"' in header
    with pytest.raises(DigestError):
        parse_challenge('Basic realm="x"')
    with pytest.raises(DigestError):
        parse_challenge('Digest realm="x", nonce="y", algorithm=SHA-512-256')
