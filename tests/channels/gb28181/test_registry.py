"""Digest authentication as a server, registration, keep-alive and offline detection, catalogues, flood
limits — the pure registry, with time passed in (GB/T 28181-2016 §9.1, §9.5, §9.6; RFC 2617, RFC 7616)."""

from __future__ import annotations

import hashlib

from dispatchd.channels.gb28181 import digest
from dispatchd.channels.gb28181.manscdp import CatalogItem
from dispatchd.channels.gb28181.registry import (
    Accepted,
    CameBack,
    CatalogCollector,
    Challenge,
    Refused,
    Registered,
    Registry,
    TokenBuckets,
    Unregistered,
    WentOffline,
)
from dispatchd.channels.hotline.transaction import Peer
from tests.channels.gb28181.captures import message

REALM = "3303810000"
DEVICE = "33038100001320000001"
PEER = Peer("UDP", "127.0.0.1", 5060)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def authorization(
    challenge: str, user: str, password: str, uri: str = "sip:33038100002000000001@3303810000"
) -> str:
    """What a device writes back (RFC 2617 §3.2.2 without qop), computed here from the RFC's formula."""
    params = digest.parse_authorization(challenge)
    realm, nonce = params["realm"], params["nonce"]
    ha1 = md5(f"{user}:{realm}:{password}")
    response = md5(f"{ha1}:{nonce}:{md5('REGISTER:' + uri)}")
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5'
    )


def register(registry: Registry, auth: str | None, now: float, expires: int | None = 3600) -> object:
    return registry.register(
        device_id=DEVICE,
        authorization=auth,
        expires=expires,
        peer=PEER,
        contact="",
        user_agent="IPC",
        now=now,
    )


def test_hikvision_capture_verifies() -> None:
    """The captured Hikvision REGISTER's digest is right for password 12345678 and wrong for another."""
    request = message("hikvision-ds2cd5024efwd-register-auth.sip")
    params = digest.parse_authorization(request.headers.get("Authorization") or "")
    assert params["username"] == "34020000001320000088" and params["realm"] == "3402000000"
    good = digest.Credentials.from_password(params["username"], params["realm"], "12345678")
    bad = digest.Credentials.from_password(params["username"], params["realm"], "87654321")
    assert digest.verify(params, "REGISTER", good)
    assert not digest.verify(params, "REGISTER", bad)
    assert not digest.verify(params, "INVITE", good)


def test_challenges_parse_back() -> None:
    """Our challenge, and both captured 401s (MD5 and lower-case md5), read back as Digest parameters."""
    ours = digest.parse_authorization(digest.challenge(REALM, "ab" * 16, stale=True))
    assert ours == {"realm": REALM, "nonce": "ab" * 16, "algorithm": "MD5", "stale": "TRUE"}
    for name in ("exosip-register-401.sip", "qtgb28181-register-401.sip"):
        header = message(name).headers.get("WWW-Authenticate") or ""
        assert digest.parse_authorization(header)["algorithm"].upper() == "MD5"


def test_qop_sess_and_sha256() -> None:
    """qop=auth with nc/cnonce, MD5-sess and SHA-256 (RFC 7616) verify against stored HA1s."""
    credentials = digest.Credentials.from_password(DEVICE, REALM, "s3cret")
    for algorithm in ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess"):
        params = {
            "username": DEVICE,
            "realm": REALM,
            "nonce": "n" * 32,
            "uri": "sip:x@y",
            "algorithm": algorithm,
            "qop": "auth",
            "nc": "00000001",
            "cnonce": "c0ffee",
        }
        name = "sha256" if algorithm.startswith("SHA") else "md5"

        def h(text: str, name: str = name) -> str:
            return hashlib.new(name, text.encode()).hexdigest()

        key = h(f"{DEVICE}:{REALM}:s3cret")
        if algorithm.endswith("sess"):
            key = h(f"{key}:{'n' * 32}:c0ffee")
        params["response"] = h(f"{key}:{'n' * 32}:00000001:c0ffee:auth:{h('REGISTER:sip:x@y')}")
        assert digest.verify(params, "REGISTER", credentials), algorithm


def test_nonces_are_ours_and_age() -> None:
    """A nonce we made checks ok, turns stale after its lifetime, and one we did not make is bad."""
    nonces = digest.Nonces(b"k" * 32, lifetime=60)
    nonce = nonces.make(1000.0)
    assert len(nonce) == 32 and nonces.check(nonce, 1030.0) == "ok"
    assert nonces.check(nonce, 1100.0) == "stale"
    assert nonces.check("0" * 32, 1000.0) == "bad" and digest.Nonces().check(nonce, 1000.0) == "bad"


def test_register_with_shared_password() -> None:
    """No credentials → 401 challenge; the right digest → registered; a wrong one → 403."""
    registry = Registry(REALM, shared_password="shared-pw")
    first = register(registry, None, 0.0)
    assert isinstance(first, Challenge) and f'realm="{REALM}"' in first.header
    wrong = register(registry, authorization(first.header, DEVICE, "nope"), 1.0)
    assert isinstance(wrong, Refused) and wrong.status == 403 and DEVICE not in registry
    ok = register(registry, authorization(first.header, DEVICE, "shared-pw"), 1.0, expires=999999)
    assert isinstance(ok, Accepted) and ok.expires == 3600
    assert isinstance(ok.event, Registered) and ok.event.fresh and DEVICE in registry


def test_own_password_wins_and_needs_the_device_id() -> None:
    """A device with its own HA1 is checked against it, not the shared password, and by its own id."""
    own = digest.Credentials.from_password(DEVICE, REALM, "own-pw")
    registry = Registry(
        REALM, shared_password="shared-pw", credentials_of=lambda d: own if d == DEVICE else None
    )
    challenge = register(registry, None, 0.0)
    assert isinstance(challenge, Challenge)
    assert isinstance(register(registry, authorization(challenge.header, DEVICE, "shared-pw"), 0.0), Refused)
    other_user = register(registry, authorization(challenge.header, "33038100001320000099", "own-pw"), 0.0)
    assert isinstance(other_user, Refused) and "device id" in other_user.reason
    assert isinstance(register(registry, authorization(challenge.header, DEVICE, "own-pw"), 0.0), Accepted)


def test_no_password_at_all_is_refused() -> None:
    """Without a shared password, a device with no password of its own cannot register."""
    registry = Registry(REALM)
    challenge = register(registry, None, 0.0)
    assert isinstance(challenge, Challenge)
    refused = register(registry, authorization(challenge.header, DEVICE, ""), 0.0)
    assert isinstance(refused, Refused) and refused.status == 403


def test_stale_foreign_and_other_realm_nonces_are_challenged_again() -> None:
    """An old nonce gets stale=TRUE; a nonce we never issued or another realm gets a new challenge."""
    registry = Registry(REALM, shared_password="pw", nonces=digest.Nonces(lifetime=30))
    challenge = register(registry, None, 0.0)
    assert isinstance(challenge, Challenge)
    stale = register(registry, authorization(challenge.header, DEVICE, "pw"), 100.0)
    assert isinstance(stale, Challenge) and "stale=TRUE" in stale.header
    foreign = authorization(f'Digest realm="{REALM}", nonce="1715926053"', DEVICE, "pw")
    assert isinstance(register(registry, foreign, 1.0), Challenge)
    other_realm = authorization(challenge.header.replace(REALM, "3402000000"), DEVICE, "pw")
    assert isinstance(register(registry, other_realm, 1.0), Challenge)
    assert isinstance(register(registry, "Basic Zm9vOmJhcg==", 1.0), Refused)


def test_keepalive_offline_and_back() -> None:
    """Offline after interval × missed keep-alives without one; online again with the next; expiry ends it."""
    registry = Registry(REALM, shared_password="pw", keepalive_interval=10, missed_keepalives=3)
    challenge = register(registry, None, 0.0)
    assert isinstance(challenge, Challenge)
    assert isinstance(
        register(registry, authorization(challenge.header, DEVICE, "pw"), 0.0, expires=100), Accepted
    )
    assert registry.next_deadline() == 30.0
    assert registry.seen(DEVICE, 25.0) == [] and registry.tick(50.0) == []
    assert registry.tick(55.0) == [WentOffline(DEVICE, "keepalive")]
    assert registry.tick(60.0) == []
    assert registry.seen(DEVICE, 70.0) == [CameBack(DEVICE)]
    assert registry.tick(100.0) == [WentOffline(DEVICE, "expired"), Unregistered(DEVICE, "expired")]
    assert DEVICE not in registry


def test_unregister_with_expires_zero() -> None:
    """REGISTER with Expires: 0 (and valid credentials) removes the device."""
    registry = Registry(REALM, shared_password="pw")
    challenge = register(registry, None, 0.0)
    assert isinstance(challenge, Challenge)
    auth = authorization(challenge.header, DEVICE, "pw")
    register(registry, auth, 0.0)
    result = register(registry, auth, 1.0, expires=0)
    assert isinstance(result, Accepted) and result.event == Unregistered(DEVICE, "unregister")
    assert DEVICE not in registry


def test_full_registry_and_bad_ids() -> None:
    """Past max_devices a new device gets 503; an id that is not 20 digits gets 400."""
    registry = Registry(REALM, shared_password="pw", max_devices=0)
    challenge = register(registry, None, 0.0)
    assert isinstance(challenge, Challenge)
    full = register(registry, authorization(challenge.header, DEVICE, "pw"), 0.0)
    assert isinstance(full, Refused) and full.status == 503
    bad = registry.register(
        device_id="1234", authorization=None, expires=None, peer=PEER, contact="", user_agent="", now=0.0
    )
    assert isinstance(bad, Refused) and bad.status == 400


def test_token_buckets() -> None:
    """A key may send its burst at once, then at the rate; other keys are not affected."""
    buckets = TokenBuckets(rate=2.0, burst=3, capacity=2)
    assert [buckets.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("b", 0.0)
    assert buckets.allow("a", 0.5) and not buckets.allow("a", 0.5)
    buckets.allow("c", 0.0)
    assert len(buckets) == 2  # the oldest idle key was forgotten


def test_catalog_in_parts() -> None:
    """Three parts of SumNum 5 (one item repeated) complete the catalogue; a stalled one is released partial."""
    collector = CatalogCollector(timeout=10)
    items = [CatalogItem(f"3303810000131000000{i}", f"cam {i}") for i in range(5)]
    assert collector.add(DEVICE, 7, 5, tuple(items[:2]), 0.0) is None
    assert collector.add(DEVICE, 7, 5, tuple(items[1:3]), 1.0) is None
    done = collector.add(DEVICE, 7, 5, tuple(items[3:]), 2.0)
    assert (
        done is not None and done.complete and [i.name for i in done.items] == [f"cam {i}" for i in range(5)]
    )
    assert collector.add(DEVICE, 8, 5, tuple(items[:1]), 3.0) is None
    assert collector.next_deadline() == 13.0
    (partial,) = collector.tick(13.0)
    assert not partial.complete and len(partial.items) == 1 and len(collector) == 0
