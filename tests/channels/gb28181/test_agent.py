"""The platform's GB/T 28181 user agent without an event loop: messages a device writes go in with a
time, and what the platform sends and reports comes out (GB/T 28181-2016 §9)."""

from __future__ import annotations

import itertools
from datetime import datetime

from dispatchd.channels.gb28181 import manscdp
from dispatchd.channels.gb28181.agent import (
    AgentConfig,
    AlarmReceived,
    AuthFailed,
    CatalogChanged,
    CatalogReceived,
    DeviceInfoReceived,
    DeviceOffline,
    DeviceOnline,
    DeviceRegistered,
    DeviceUnregistered,
    Dropped,
    Gb28181Agent,
    RequestFailed,
    StreamAnswered,
    StreamEnded,
    StreamFailed,
    SubscriptionState,
)
from dispatchd.channels.gb28181.registry import Registry
from dispatchd.channels.gb28181.sdp import GbSdp, parse_sdp
from dispatchd.channels.hotline.sip import Request, Response, parse_message
from dispatchd.channels.hotline.transaction import Peer, Send, Timers
from tests.channels.gb28181 import device as sim
from tests.channels.gb28181.captures import wire

PLATFORM = "33038100002000000001"
DOMAIN = "3303810000"
DEVICE = "33038100001320000001"
CAMERA = "33038100001310000001"
PEER = Peer("UDP", "192.0.2.10", 5060)


def make_agent(**registry: object) -> Gb28181Agent:
    counter = itertools.count(1)
    options: dict[str, object] = {
        "shared_password": "12345678",
        "keepalive_interval": 10.0,
        "missed_keepalives": 3,
    }
    options.update(registry)
    return Gb28181Agent(
        Registry(DOMAIN, **options),  # type: ignore[arg-type]
        AgentConfig(
            PLATFORM, DOMAIN, host="192.0.2.1", timers=Timers(0.5, 4.0, 5.0), invite_timeout=5.0, burst=50
        ),
        local_port=lambda transport: 15060,
        new_token=lambda: f"t{next(counter)}",
    )


def sent(effects: list[object]) -> list[Request | Response]:
    return [e.message for e in effects if isinstance(e, Send)]


def statuses(effects: list[object]) -> list[int]:
    return [m.status for m in sent(effects) if isinstance(m, Response)]


def requests(effects: list[object], method: str) -> list[Request]:
    return [m for m in sent(effects) if isinstance(m, Request) and m.method == method]


def register_request(auth: str = "", expires: int = 3600, cseq: int = 1) -> bytes:
    headers = [
        ("Via", f"SIP/2.0/UDP {PEER.host}:{PEER.port};rport;branch=z9hG4bKreg{cseq}"),
        ("From", f"<sip:{DEVICE}@{DOMAIN}>;tag=dev"),
        ("To", f"<sip:{DEVICE}@{DOMAIN}>"),
        ("Call-ID", "reg-1"),
        ("CSeq", f"{cseq} REGISTER"),
        ("Contact", f"<sip:{DEVICE}@{PEER.host}:{PEER.port}>"),
        ("Max-Forwards", "70"),
        ("Expires", str(expires)),
    ]
    if auth:
        headers.append(("Authorization", auth))
    return sim.build(f"REGISTER sip:{PLATFORM}@192.0.2.1:15060 SIP/2.0", headers)


def registered(agent: Gb28181Agent, now: float = 0.0) -> list[object]:
    challenge = agent.receive(register_request(), PEER, now)
    header = sent(challenge)[0].headers.get("WWW-Authenticate") or ""
    params = sim.challenge_params(header)
    uri = f"sip:{PLATFORM}@192.0.2.1:15060"
    response = sim.digest_response(DEVICE, params["realm"], "12345678", params["nonce"], "REGISTER", uri)
    auth = (
        f'Digest username="{DEVICE}", realm="{params["realm"]}", nonce="{params["nonce"]}", uri="{uri}", '
        f'response="{response}", algorithm=MD5'
    )
    return agent.receive(register_request(auth, cseq=2), PEER, now, datetime(2026, 5, 3, 8, 0, 1, 250000))


_branch = itertools.count(1)


def device_message(
    body: bytes, *, peer: Peer = PEER, user: str = DEVICE, content_type: str = "Application/MANSCDP+xml"
) -> bytes:
    n = next(_branch)
    return sim.build(
        f"MESSAGE sip:{PLATFORM}@{DOMAIN} SIP/2.0",
        [
            ("Via", f"SIP/2.0/UDP {peer.host}:{peer.port};rport;branch=z9hG4bKm{n}"),
            ("From", f"<sip:{user}@{DOMAIN}>;tag=m{n}"),
            ("To", f"<sip:{PLATFORM}@{DOMAIN}>"),
            ("Call-ID", f"msg-{n}"),
            ("CSeq", f"{n} MESSAGE"),
            ("Max-Forwards", "70"),
            ("Content-Type", content_type),
        ],
        body,
    )


def keepalive(sn: int = 1) -> bytes:
    return device_message(sim.manscdp("Notify", "Keepalive", sn, DEVICE, "<Status>OK</Status>\n"))


def test_captured_register_is_challenged() -> None:
    """The Dahua dome's first REGISTER (captured) gets 401 with a digest challenge in our realm."""
    effects = make_agent().receive(
        wire("dahua-sd6c3230-register.sip"), Peer("UDP", "192.168.6.71", 5060), 0.0
    )
    (answer,) = sent(effects)
    assert isinstance(answer, Response) and answer.status == 401
    assert f'realm="{DOMAIN}"' in (answer.headers.get("WWW-Authenticate") or "")


def test_register_with_digest_and_date() -> None:
    """The digest registration gets 200 with Expires and the GB Date (§9.1.2.1), and a registered event."""
    effects = registered(make_agent())
    (ok,) = sent(effects)
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.headers.get("Expires") == "3600" and ok.headers.get("Date") == "2026-05-03T08:00:01.250"
    assert [e for e in effects if isinstance(e, DeviceRegistered)] == [
        DeviceRegistered(DEVICE, PEER, 3600, True, "")
    ]


def test_wrong_password_is_403_and_reported() -> None:
    """A digest for the wrong password gets 403 and an AuthFailed event; the device stays unknown."""
    agent = make_agent(shared_password="other")
    effects = registered(agent)
    assert statuses(effects) == [403]
    assert [type(e) for e in effects if not isinstance(e, Send)] == [AuthFailed]
    assert statuses(agent.receive(keepalive(), PEER, 1.0)) == [403]


def test_keepalive_offline_and_online_again() -> None:
    """Keep-alives are answered 200; 30 s (3 × 10 s) without one → offline; the next one → online."""
    agent = make_agent()
    registered(agent)
    assert statuses(agent.receive(keepalive(1), PEER, 5.0)) == [200]
    assert not any(isinstance(e, DeviceOffline) for e in agent.tick(30.0))
    assert DeviceOffline(DEVICE, "keepalive") in agent.tick(35.0)
    effects = agent.receive(keepalive(2), PEER, 40.0)
    assert statuses(effects) == [200] and DeviceOnline(DEVICE) in effects


def test_unregister() -> None:
    """REGISTER with Expires: 0 ends the registration."""
    agent = make_agent()
    registered(agent)
    challenge = agent.receive(register_request(expires=0, cseq=3), PEER, 1.0)
    params = sim.challenge_params(sent(challenge)[0].headers.get("WWW-Authenticate") or "")
    uri = f"sip:{PLATFORM}@192.0.2.1:15060"
    response = sim.digest_response(DEVICE, DOMAIN, "12345678", params["nonce"], "REGISTER", uri)
    auth = f'Digest username="{DEVICE}", realm="{DOMAIN}", nonce="{params["nonce"]}", uri="{uri}", response="{response}"'
    effects = agent.receive(register_request(auth, expires=0, cseq=4), PEER, 1.0)
    assert statuses(effects) == [200] and DeviceUnregistered(DEVICE, "unregister") in effects


def test_messages_from_strangers_are_refused() -> None:
    """A keep-alive from an unregistered device, or from another address than it registered from: 403."""
    agent = make_agent()
    assert statuses(agent.receive(keepalive(), PEER, 0.0)) == [403]
    registered(agent)
    elsewhere = Peer("UDP", "198.51.100.7", 5060)
    effects = agent.receive(
        device_message(sim.manscdp("Notify", "Keepalive", 3, DEVICE, ""), peer=elsewhere), elsewhere, 1.0
    )
    assert statuses(effects) == [403] and any(
        isinstance(e, Dropped) and e.reason == "wrong_address" for e in effects
    )


def test_malformed_xml_gbk_and_content_type() -> None:
    """Broken XML → 400 naming it; a DOCTYPE → 400; GBK text is read; another content type → 415."""
    agent = make_agent()
    registered(agent)
    broken = agent.receive(device_message(b"<Notify><CmdType>Keepalive</CmdType>"), PEER, 1.0)
    (bad,) = sent(broken)
    assert isinstance(bad, Response) and bad.status == 400 and "malformed XML" in bad.reason
    doctype = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><Notify/>'
    assert statuses(agent.receive(device_message(doctype), PEER, 1.0)) == [400]
    gbk = sim.manscdp(
        "Notify",
        "Alarm",
        9,
        CAMERA,
        "<AlarmPriority>1</AlarmPriority>\n<AlarmDescription>堃区越界</AlarmDescription>\n",
        "GBK",
    )
    effects = agent.receive(device_message(gbk), PEER, 1.0)
    (alarm,) = [e for e in effects if isinstance(e, AlarmReceived)]
    assert alarm.alarm.description == "堃区越界"
    assert statuses(agent.receive(device_message(b"hello", content_type="text/plain"), PEER, 1.0)) == [415]


def test_alarm_is_answered_with_response_alarm() -> None:
    """The captured Hikvision alarm gets 200, then our MESSAGE Response/Alarm Result OK with its SN (§9.4)."""
    agent = make_agent()
    registered(agent)
    body = parse_message(wire("hikvision-ds2cd5024efwd-alarm-notify.sip")).body
    effects = agent.receive(device_message(body), PEER, 1.0)
    assert statuses(effects) == [200]
    (answer,) = requests(effects, "MESSAGE")
    assert manscdp.parse(answer.body) == manscdp.Result("Alarm", 99, "34020000001310000001", "OK")
    assert answer.headers.get("Content-Type") == "Application/MANSCDP+xml"


def catalog_part(
    sn: int, sum_num: int, items: list[tuple[str, str, float, float]], root: str = "Response"
) -> bytes:
    inner = (
        f'<SumNum>{sum_num}</SumNum>\n<DeviceList Num="{len(items)}">\n'
        + "".join(
            f"<Item>\n<DeviceID>{i}</DeviceID>\n<Name>{n}</Name>\n<Status>ON</Status>\n<Longitude>{lon}</Longitude>\n"
            f"<Latitude>{lat}</Latitude>\n"
            + ("<Event>ADD</Event>\n" if root == "Notify" else "")
            + "</Item>\n"
            for i, n, lon, lat in items
        )
        + "</DeviceList>\n"
    )
    return sim.manscdp(root, "Catalog", sn, DEVICE, inner)


def test_query_catalog_and_gather_parts() -> None:
    """Query/Catalog goes out as MESSAGE; a three-item answer in two parts comes back as one catalogue."""
    agent = make_agent()
    registered(agent)
    sn, effects = agent.query(DEVICE, "Catalog", 1.0)
    (query,) = requests(effects, "MESSAGE")
    assert query.uri == f"sip:{DEVICE}@{PEER.host}:{PEER.port}" and query.to.parsed_uri().user == DEVICE
    assert manscdp.parse(query.body) == manscdp.Query("Catalog", sn, DEVICE)
    ok = sim.reply(sim.parse(query.encode()), 200, "OK", to_tag="d")
    assert agent.receive(ok, PEER, 1.1) == []
    items = [(f"3303810000131000000{i}", f"路口{i}", 120.6 + i / 100, 27.7) for i in range(1, 4)]
    first = agent.receive(device_message(catalog_part(sn, 3, items[:2])), PEER, 1.2)
    assert not any(isinstance(e, CatalogReceived) for e in first)
    second = agent.receive(device_message(catalog_part(sn, 3, items[2:])), PEER, 1.3)
    (catalog,) = [e for e in second if isinstance(e, CatalogReceived)]
    assert catalog.complete and [i.name for i in catalog.items] == ["路口1", "路口2", "路口3"]
    assert catalog.items[2].longitude == 120.63


def test_catalog_notification_and_device_info() -> None:
    """A Notify/Catalog (subscription) reports changed items; Response/DeviceInfo is reported."""
    agent = make_agent()
    registered(agent)
    effects = agent.receive(
        device_message(catalog_part(5, 1, [(CAMERA, "新", 120.0, 27.0)], "Notify")), PEER, 1.0
    )
    (changed,) = [e for e in effects if isinstance(e, CatalogChanged)]
    assert changed.items[0].event == "ADD"
    info = parse_message(wire("hikvision-ds2cd5024efwd-deviceinfo-response.sip")).body
    effects = agent.receive(device_message(info), PEER, 1.0)
    assert [e.info.model for e in effects if isinstance(e, DeviceInfoReceived)] == ["DS-2CD5024EFWD"]


def test_unanswered_query_fails_after_timer_f() -> None:
    """A query the device never answers is reported failed (408) after 64·T1."""
    agent = make_agent()
    registered(agent)
    agent.query(DEVICE, "DeviceInfo", 1.0)
    failures = [e for e in agent.tick(1.0 + 32.0) if isinstance(e, RequestFailed)]
    assert failures == [RequestFailed(DEVICE, "DeviceInfo", 408)]


def test_ptz_control_message() -> None:
    """DeviceControl goes to the channel with the PTZ hex; IFameCmd as a field."""
    agent = make_agent()
    registered(agent)
    (control,) = requests(agent.control(DEVICE, CAMERA, 1.0, ptz_cmd="A50F000800640020"), "MESSAGE")
    parsed = manscdp.parse(control.body)
    assert isinstance(parsed, manscdp.DeviceControl) and parsed.ptz_cmd == "A50F000800640020"
    assert parsed.device_id == CAMERA and control.uri.startswith(f"sip:{CAMERA}@")
    (key,) = requests(agent.control(DEVICE, CAMERA, 1.0, fields=(("IFameCmd", "Send"),)), "MESSAGE")
    assert b"<IFameCmd>Send</IFameCmd>" in key.body


def test_subscribe_and_refresh() -> None:
    """SUBSCRIBE Catalog with a Query body; the 200's Expires is honoured, refreshed in-dialog at 4/5."""
    agent = make_agent()
    registered(agent)
    (sub,) = requests(agent.subscribe(DEVICE, "Catalog", 1.0, expires=100), "SUBSCRIBE")
    assert sub.headers.get("Event") == "Catalog" and sub.headers.get("Expires") == "100"
    assert isinstance(manscdp.parse(sub.body), manscdp.Query)
    ok = sim.reply(sim.parse(sub.encode()), 200, "OK", [("Expires", "100")], to_tag="s1")
    assert SubscriptionState(DEVICE, "Catalog", 200, 100) in agent.receive(ok, PEER, 1.1)
    (refresh,) = requests(agent.tick(81.2), "SUBSCRIBE")
    assert refresh.call_id == sub.call_id and refresh.to.tag == "s1" and refresh.cseq.number == 2
    refused = sim.reply(sim.parse(refresh.encode()), 489, "Bad Event", to_tag="s1")
    assert SubscriptionState(DEVICE, "Catalog", 489, 0) in agent.receive(refused, PEER, 81.3)


def offer() -> GbSdp:
    return GbSdp(PLATFORM, "192.0.2.1", 30000, connection="192.0.2.1", direction="recvonly", ssrc="0381000001",
                 payloads=(96,), rtpmap=((96, "PS/90000"),))  # fmt: skip


def answer_sdp() -> bytes:
    return (
        f"v=0\r\no={CAMERA} 0 0 IN IP4 {PEER.host}\r\ns=Play\r\nc=IN IP4 {PEER.host}\r\nt=0 0\r\n"
        "m=video 9712 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny=0381000001\r\nf=\r\n"
    ).encode()


def test_invite_answer_ack_and_bye() -> None:
    """INVITE with Subject and our offer; the 200 is ACKed (copies too) and reported; bye() sends BYE."""
    agent = make_agent()
    registered(agent)
    call, effects = agent.invite(DEVICE, CAMERA, offer(), 1.0)
    (invite,) = requests(effects, "INVITE")
    assert invite.headers.get("Subject") == f"{CAMERA}:0381000001,{PLATFORM}:0"
    assert parse_sdp(invite.body).ssrc == "0381000001" and invite.uri.startswith(f"sip:{CAMERA}@")
    ok = sim.reply(sim.parse(invite.encode()), 200, "OK",
                   [("Contact", f"<sip:{CAMERA}@{PEER.host}:5060>"), ("Content-Type", "application/sdp")],
                   answer_sdp(), to_tag="cam")  # fmt: skip
    effects = agent.receive(ok, PEER, 1.2)
    (ack,) = requests(effects, "ACK")
    assert (
        ack.uri == f"sip:{CAMERA}@{PEER.host}:5060"
        and ack.to.tag == "cam"
        and ack.cseq.number == invite.cseq.number
    )
    (answered,) = [e for e in effects if isinstance(e, StreamAnswered)]
    assert answered.call == call and answered.sdp.port == 9712
    again = agent.receive(ok, PEER, 1.3)
    assert len(requests(again, "ACK")) == 1 and not any(isinstance(e, StreamAnswered) for e in again)
    assert call is not None
    (bye,) = requests(agent.bye(call, 2.0), "BYE")
    assert bye.call_id == invite.call_id and bye.cseq.number == invite.cseq.number + 1


def test_device_bye_ends_the_stream() -> None:
    """A BYE from the device in the dialog is answered 200 and ends the stream; a stray BYE gets 481."""
    agent = make_agent()
    registered(agent)
    call, effects = agent.invite(DEVICE, CAMERA, offer(), 1.0)
    (invite,) = requests(effects, "INVITE")
    agent.receive(
        sim.reply(
            sim.parse(invite.encode()),
            200,
            "OK",
            [("Content-Type", "application/sdp")],
            answer_sdp(),
            to_tag="cam",
        ),
        PEER,
        1.1,
    )
    bye = sim.build(
        f"BYE sip:{PLATFORM}@192.0.2.1:15060 SIP/2.0",
        [
            ("Via", f"SIP/2.0/UDP {PEER.host}:{PEER.port};branch=z9hG4bKbye1"),
            ("From", f"<sip:{CAMERA}@{DOMAIN}>;tag=cam"),
            ("To", f"<sip:{PLATFORM}@{DOMAIN}>;tag={invite.from_.tag}"),
            ("Call-ID", invite.call_id),
            ("CSeq", "9 BYE"),
        ],
    )
    effects = agent.receive(bye, PEER, 2.0)
    assert statuses(effects) == [200] and StreamEnded(call or "", "device_bye") in effects
    assert statuses(agent.receive(bye.replace(b"z9hG4bKbye1", b"z9hG4bKbye2"), PEER, 2.1)) == [481]


def test_refused_and_unanswered_invites() -> None:
    """A 486 is ACKed and reported; an INVITE left unanswered fails at invite_timeout, its late 2xx is ended."""
    agent = make_agent()
    registered(agent)
    call, effects = agent.invite(DEVICE, CAMERA, offer(), 1.0)
    (invite,) = requests(effects, "INVITE")
    busy = agent.receive(sim.reply(sim.parse(invite.encode()), 486, "Busy Here", to_tag="x"), PEER, 1.1)
    assert requests(busy, "ACK") and StreamFailed(call or "", 486, "Busy Here") in busy
    late, effects = agent.invite(DEVICE, CAMERA, offer(), 2.0)
    (invite,) = requests(effects, "INVITE")
    agent.receive(sim.reply(sim.parse(invite.encode()), 100, "Trying"), PEER, 2.1)
    assert StreamFailed(late or "", 408, "no answer in time") in agent.tick(7.0)
    effects = agent.receive(
        sim.reply(
            sim.parse(invite.encode()),
            200,
            "OK",
            [("Content-Type", "application/sdp")],
            answer_sdp(),
            to_tag="y",
        ),
        PEER,
        8.0,
    )
    assert requests(effects, "ACK") and requests(effects, "BYE")
    assert not any(isinstance(e, StreamAnswered) for e in effects)


def test_flood_from_one_address_spares_the_others() -> None:
    """Past its burst, one address's messages are dropped unanswered; another device is still served."""
    agent = make_agent()
    registered(agent)
    flood = Peer("UDP", "203.0.113.9", 5060)
    answered = dropped = 0
    for _ in range(80):
        effects = agent.receive(device_message(b"<x/>", peer=flood, user="33038100001320000099"), flood, 1.0)
        answered += len(statuses(effects))
        dropped += sum(1 for e in effects if isinstance(e, Dropped) and e.reason == "rate_limited")
    assert answered == 50 and dropped == 30
    assert statuses(agent.receive(keepalive(7), PEER, 1.1)) == [200]


def test_malformed_sip_is_answered_or_dropped() -> None:
    """A request with a bad CSeq gets 400 naming it; garbage is dropped and reported."""
    agent = make_agent()
    bad = keepalive().replace(b"MESSAGE\r\n", b"\r\n", 1).replace(b"CSeq: ", b"CSeq: x", 1)
    effects = agent.receive(bad, PEER, 0.0)
    assert statuses(effects) == [400]
    assert [e.reason for e in agent.receive(b"\x00\x01garbage", PEER, 0.0) if isinstance(e, Dropped)] == [
        "malformed_sip"
    ]
