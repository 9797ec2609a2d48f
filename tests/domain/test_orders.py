"""The order lifecycle and its two timers, without an event loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatchd.domain import orders as m
from dispatchd.domain.orders import ORDER_STATES, Order, OrderClock, OrderConflict

T0 = datetime(2026, 5, 3, 8, 0, tzinfo=UTC)
CLOCK = OrderClock(resend_after=timedelta(seconds=15), accept_timeout=timedelta(seconds=60))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new() -> Order:
    return m.new_order(T0, CLOCK)


def in_state(state: str) -> Order:
    o = new()
    if state == "pending":
        return o
    if state == "delivered":
        return m.acknowledge(o, at(1)).order
    if state == "accepted":
        return m.accept(o, at(1)).order
    if state == "declined":
        return m.decline(o, at(1)).order
    if state == "cancelled":
        return m.cancel(o, at(1)).order
    if state == "reassigned":
        return m.reassign(o, at(1)).order
    return m.complete(m.accept(o, at(1)).order, at(2)).order


def test_a_new_order_waits_for_receipt_and_acceptance() -> None:
    """A new order is pending, sent once, with a resend at +15 s and an accept deadline at +60 s."""
    o = new()
    assert (o.state, o.sends, o.resend_at, o.accept_by) == ("pending", 1, at(15), at(60))
    assert o.open and not o.overdue


def test_first_receipt_delivers_and_stops_resending() -> None:
    """The first receipt delivers the order and clears the resend timer; a second changes nothing."""
    step = m.acknowledge(new(), at(3))
    assert step.event == "delivered" and step.order.delivered_at == at(3) and step.order.resend_at is None
    assert step.order.accept_by == at(60)
    assert not m.acknowledge(step.order, at(4)).changed


def test_resend_until_someone_acknowledges() -> None:
    """Without receipt the order is sent again every 15 s; not before it is due, not once delivered."""
    o = new()
    assert not m.resend(o, at(14), CLOCK).changed
    step = m.resend(o, at(15), CLOCK)
    assert step.event == "resent" and step.order.sends == 2 and step.order.resend_at == at(30)
    delivered = m.acknowledge(step.order, at(20)).order
    assert not m.resend_due(delivered, at(100))


def test_accept_deadline_alerts_once_and_the_order_stays_open() -> None:
    """Past 60 s without accept the order is flagged overdue once; it can still be accepted."""
    o = m.acknowledge(new(), at(2)).order
    assert not m.expire_accept(o, at(59)).changed
    step = m.expire_accept(o, at(60))
    assert step.event == "overdue" and step.order.overdue and step.order.accept_by is None
    assert not m.expire_accept(step.order, at(120)).changed
    accepted = m.accept(step.order, at(70)).order
    assert accepted.state == "accepted" and not accepted.overdue


def test_accept_and_decline_imply_receipt() -> None:
    """Accepting or declining a pending order also marks it delivered and stops both timers."""
    for move, state in ((m.accept, "accepted"), (m.decline, "declined")):
        o = move(new(), at(5)).order
        assert o.state == state and o.delivered_at == at(5) and o.resend_at is None and o.accept_by is None


@pytest.mark.parametrize("state", ORDER_STATES)
def test_every_move_from_every_state(state: str) -> None:
    """Each move is legal exactly where the lifecycle allows it; a repeat of the same move is a no-op."""
    legal = {
        "accept": {"pending", "delivered", "accepted"},
        "decline": {"pending", "delivered", "declined"},
        "cancel": {"pending", "delivered", "accepted", "cancelled"},
        "reassign": {"pending", "delivered"},
        "complete": {"accepted", "completed"},
    }
    o = in_state(state)
    assert o.state == state
    for name, allowed in legal.items():
        move = getattr(m, name)
        if state in allowed:
            step = move(o, at(10))
            assert step.order.state in ORDER_STATES
        else:
            with pytest.raises(OrderConflict) as err:
                move(o, at(10))
            assert err.value.state == state and state in err.value.message_en and err.value.message_zh
    assert m.acknowledge(o, at(10)).changed == (state == "pending")


def test_final_orders_have_no_timers() -> None:
    """Declined, cancelled, reassigned and completed orders carry no timer and are not open."""
    for state in ("declined", "cancelled", "reassigned", "completed"):
        o = in_state(state)
        assert not o.open and o.resend_at is None and o.accept_by is None and o.closed_at is not None
        assert not m.resend_due(o, at(1000)) and not m.accept_overdue(o, at(1000))
