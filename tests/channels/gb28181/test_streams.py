"""When a camera's stream is requested and ended — the pure plan, with time passed in."""

from __future__ import annotations

from dispatchd.channels.gb28181.streams import StartStream, StopStream, StreamPlan


def plan() -> StreamPlan:
    return StreamPlan(stall_timeout=8.0, linger=5.0, max_backoff=30.0)


def test_first_consumer_starts_and_others_share() -> None:
    """The first consumer asks for the stream; a second one while it starts asks for nothing."""
    p = plan()
    assert p.add_consumer(0.0) == [StartStream(1)]
    assert p.add_consumer(0.1) == []
    p.started(0.5)
    assert p.state == "playing" and p.tick(1.0) == []


def test_failures_back_off_doubling_up_to_the_cap() -> None:
    """Refused INVITEs are tried again after 1, 2, 4 … seconds, never more than 30 s apart."""
    p = plan()
    p.add_consumer(0.0)
    now, waits = 0.0, []
    for _ in range(7):
        p.failed(now)
        deadline = p.next_deadline()
        assert deadline is not None
        waits.append(deadline - now)
        now = deadline
        assert p.tick(now) == [StartStream(p.attempts)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    p.started(now)
    p.media(now + 0.1)
    assert p.failures == 0


def test_stall_restarts_at_once() -> None:
    """No video for stall_timeout: stop and request again in the same step (a re-INVITE)."""
    p = plan()
    p.add_consumer(0.0)
    p.started(1.0)
    p.media(2.0)
    assert p.next_deadline() == 10.0
    assert p.tick(9.9) == []
    assert p.tick(10.0) == [StopStream("stalled"), StartStream(2)]
    assert p.restarts == 1


def test_answered_but_silent_counts_as_stalled() -> None:
    """A device that answers but never sends video is stopped and asked again after stall_timeout."""
    p = plan()
    p.add_consumer(0.0)
    p.started(1.0)
    assert p.tick(9.0) == [StopStream("stalled"), StartStream(2)]


def test_device_bye_asks_again_then_backs_off() -> None:
    """A BYE from the device is answered with a new INVITE at once; a second without video waits 2 s."""
    p = plan()
    p.add_consumer(0.0)
    p.started(0.5)
    p.ended(1.0)
    assert p.tick(1.0) == [StartStream(2)]
    p.started(1.5)
    p.ended(2.0)
    assert p.tick(2.0) == [] and p.tick(4.0) == [StartStream(3)]


def test_last_consumer_leaving_lingers_then_ends() -> None:
    """After the last consumer leaves the stream lingers; a new one within it keeps it, else BYE."""
    p = plan()
    p.add_consumer(0.0)
    p.started(0.5)
    p.media(1.0)
    assert p.remove_consumer(2.0) == []
    assert p.add_consumer(4.0) == []  # a reload within the linger: the stream stayed up
    p.media(4.5)
    p.remove_consumer(5.0)
    assert p.next_deadline() == 10.0
    assert p.tick(9.0) == [] and p.tick(10.0) == [StopStream("idle")]
    assert p.state == "idle" and p.next_deadline() is None


def test_no_consumer_no_stream() -> None:
    """Without consumers nothing is requested, even when a retry was due."""
    p = plan()
    p.add_consumer(0.0)
    p.failed(0.5)
    p.remove_consumer(0.6)
    assert p.tick(100.0) == []


def test_a_playback_runs_once() -> None:
    """A playback plan: the recording running out (no video for stall_timeout) finishes it without a
    new INVITE; the device's BYE finishes it too; refused three times it gives up; finished, it has
    no deadline and asks for nothing more."""
    p = StreamPlan(stall_timeout=8.0, linger=0.0, once=True)
    assert p.add_consumer(0.0) == [StartStream(1)]
    p.started(1.0)
    p.media(2.0)
    assert p.tick(10.0) == [StopStream("finished")]
    assert p.state == "finished" and p.next_deadline() is None and p.tick(60.0) == []

    ended = StreamPlan(stall_timeout=8.0, linger=0.0, once=True)
    ended.add_consumer(0.0)
    ended.started(1.0)
    ended.ended(3.0)
    assert ended.state == "finished" and ended.tick(4.0) == []

    refused = StreamPlan(stall_timeout=8.0, linger=0.0, once=True)
    refused.add_consumer(0.0)
    now = 0.0
    for attempt in (2, 3):
        refused.failed(now)
        now = refused.next_deadline() or now
        assert refused.tick(now) == [StartStream(attempt)]
    refused.failed(now)
    assert refused.tick(now + 60) == [] and refused.state == "finished"
