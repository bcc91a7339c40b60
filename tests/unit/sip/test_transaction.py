"""Tests for sip/transaction.py: RFC 3261 §17 state machines and the layer, on a fake clock."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.message import Request, Response, make_response, parse_message
from sip.transaction import (
    OVERLOAD_RETRY_AFTER,
    AckTimedOut,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    StrayResponse,
    TimerConfig,
    Transaction,
    TransactionEvent,
    TransactionLayer,
    TransactionState,
    TransactionTerminated,
    TransactionTimedOut,
    Wire,
    make_ack,
    make_cancel,
    server_key,
)
from sip.uri import SipUri

UDP: Hashable = ("udp", "10.0.0.7", 5060)
TCP: Hashable = ("tcp", "10.0.0.7", 5060)
URI = SipUri("3402000000", "34020000001320000001")


def request(
    method: str = "REGISTER",
    branch: str | None = "z9hG4bKaaa",
    *,
    cseq: int = 1,
    call_id: str = "call-1@10.0.0.7",
    from_tag: str | None = "ft1",
    to_tag: str | None = None,
    host: str = "10.0.0.7",
    port: int = 5060,
    transport: str = "UDP",
    routes: tuple[str, ...] = (),
) -> Request:
    via = f"SIP/2.0/{transport} {host}:{port};rport"
    if branch is not None:
        via += f";branch={branch}"
    frm = "<sip:34020000001320000001@3402000000>" + (f";tag={from_tag}" if from_tag else "")
    to = "<sip:34020000002000000001@3402000000>" + (f";tag={to_tag}" if to_tag else "")
    headers = [("Via", via), ("Via", "SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKproxy")]
    headers += [("Route", r) for r in routes]
    headers += [
        ("Max-Forwards", "70"),
        ("From", frm),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:34020000001320000001@10.0.0.7:5060>"),
    ]
    return Request(method, URI, headers)


def response(req: Request, status: int, to_tag: str | None = "tt1") -> Response:
    return make_response(req, status, to_tag=to_tag)


def ack_for_2xx(invite: Request, branch: str = "z9hG4bKack2xx") -> Request:
    return request("ACK", branch, cseq=invite.cseq.seq, call_id=invite.call_id, to_tag="tt1")


def drain(layer: TransactionLayer) -> list[tuple[Request | Response, Hashable]]:
    return layer.datagrams_to_send()


def events(layer: TransactionLayer) -> list[TransactionEvent]:
    out: list[TransactionEvent] = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def without_terminated(evs: list[TransactionEvent]) -> list[TransactionEvent]:
    return [e for e in evs if not isinstance(e, TransactionTerminated)]


def fire_until(layer: TransactionLayer, until: float) -> list[tuple[float, list[object]]]:
    """Step through every deadline up to ``until``; return (time, messages sent) per step."""
    log: list[tuple[float, list[object]]] = []
    while (d := layer.next_deadline()) is not None and d <= until:
        layer.handle_timer(d)
        log.append((d, [m for m, _ in drain(layer)]))
    return log


def run_out(
    layer: TransactionLayer, limit: int = 10_000_000
) -> tuple[float, list[TransactionEvent]]:
    """Fire every timer until none is left; return the last deadline and the events."""
    last = 0.0
    evs: list[TransactionEvent] = []
    for _ in range(limit):
        d = layer.next_deadline()
        if d is None:
            return last, evs
        layer.handle_timer(d)
        layer.datagrams_to_send()
        evs += events(layer)
        last = d
    raise AssertionError("timers never ran out")


def state_of(txn: Transaction) -> TransactionState:
    return txn.state  # read through a call so mypy does not keep a narrowed literal


def sent_at(log: list[tuple[float, list[object]]]) -> list[float]:
    return [t for t, msgs in log if msgs]


# -- config and events ---------------------------------------------------------------------


def test_timer_config_defaults_and_validation() -> None:
    t = TimerConfig()
    assert (t.t1, t.t2, t.t4, t.timeout, t.timer_d) == (0.5, 4.0, 5.0, 32.0, 32.0)
    with pytest.raises(ValueError):
        TimerConfig(t1=0)
    with pytest.raises(ValueError):
        TimerConfig(t1=5, t2=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.t1 = 1.0  # type: ignore[misc]  # frozen on purpose


def test_events_are_frozen_and_validated() -> None:
    req = request()
    ev = ResponseReceived("k", req, response(req, 200))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.key = "x"  # type: ignore[misc]  # frozen on purpose
    assert not hasattr(ev, "__dict__")
    with pytest.raises(ValueError):
        AckTimedOut(req, response(req, 180))


# -- non-INVITE client ---------------------------------------------------------------------


def test_nict_udp_timer_e_schedule_and_timer_f() -> None:
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, UDP, False, 0.0)
    assert key == "z9hG4bKaaa/REGISTER"
    assert drain(layer) == [(req, UDP)]
    assert layer.next_deadline() == 0.5
    log = fire_until(layer, 31.9)
    expected = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert sent_at(log) == expected
    assert all(msgs == [req] for _, msgs in log)
    assert layer.next_deadline() == 32.0
    layer.handle_timer(32.0)
    assert events(layer) == [TransactionTimedOut(key, req), TransactionTerminated(key)]
    assert len(layer) == 0
    assert layer.next_deadline() is None
    assert layer.stats["retransmissions_sent"] == 10
    assert layer.stats["timeouts"] == 1


def test_nict_provisional_makes_timer_e_t2() -> None:
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, UDP, False, 0.0)
    drain(layer)
    fire_until(layer, 0.5)
    prov = response(req, 100, None)
    layer.receive_response(prov, 1.0)
    assert events(layer) == [ResponseReceived(key, req, prov)]
    # RFC 3261 §17.1.2.2: the pending Timer E (1.5) stays, later ones are every T2
    assert sent_at(fire_until(layer, 31.9)) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    layer.handle_timer(32.0)
    assert isinstance(events(layer)[0], TransactionTimedOut)
    assert len(layer) == 0


def test_nict_final_starts_timer_k_on_udp() -> None:
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, UDP, False, 0.0)
    drain(layer)
    ok = response(req, 200)
    layer.receive_response(ok, 0.2)
    assert events(layer) == [ResponseReceived(key, req, ok)]
    assert layer.next_deadline() == pytest.approx(5.2)
    layer.receive_response(ok, 1.0)  # retransmitted final: absorbed
    assert events(layer) == []
    assert layer.stats["absorbed"] == 1
    assert drain(layer) == []
    layer.handle_timer(5.1)
    assert len(layer) == 1
    layer.handle_timer(5.2)
    assert events(layer) == [TransactionTerminated(key)]
    assert len(layer) == 0


def test_nict_tcp_no_retransmission_k_zero_and_f_still_fires() -> None:
    layer = TransactionLayer()
    req = request(transport="TCP")
    key = layer.send_request(req, TCP, True, 0.0)
    assert layer.next_deadline() == 32.0
    assert len(drain(layer)) == 1
    layer.handle_timer(32.0)
    assert drain(layer) == []
    assert without_terminated(events(layer)) == [TransactionTimedOut(key, req)]
    # a final on TCP: Timer K is zero, the transaction ends at once
    req2 = request(branch="z9hG4bKbbb", transport="TCP")
    key2 = layer.send_request(req2, TCP, True, 40.0)
    layer.receive_response(response(req2, 200), 40.1)
    assert len(layer) == 0
    assert events(layer)[-1] == TransactionTerminated(key2)
    assert len(drain(layer)) == 1


def test_nict_standalone_shape() -> None:
    req = request("MESSAGE")
    txn = NonInviteClientTransaction(req, UDP, False, 10.0)
    assert txn.datagrams_to_send() == [(req, UDP)]
    assert txn.next_deadline() == 10.5
    txn.handle_timer(10.4)
    assert txn.datagrams_to_send() == []
    txn.handle_timer(10.5)
    assert txn.datagrams_to_send() == [(req, UDP)]
    assert txn.next_deadline() == 11.5
    txn.receive_response(response(req, 200), 11.0)
    assert txn.state is TransactionState.COMPLETED
    assert isinstance(txn.next_event(), ResponseReceived)
    txn.handle_timer(16.0)
    assert txn.terminated


# -- INVITE client -------------------------------------------------------------------------


def test_ict_udp_timer_a_doubles_then_timer_b() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    key = layer.send_request(inv, UDP, False, 0.0)
    assert key == "z9hG4bKaaa/INVITE"
    assert drain(layer) == [(inv, UDP)]
    log = fire_until(layer, 31.9)
    assert sent_at(log) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert layer.next_deadline() == 32.0
    layer.handle_timer(32.0)
    assert events(layer) == [TransactionTimedOut(key, inv), TransactionTerminated(key)]
    assert drain(layer) == []
    assert len(layer) == 0


def test_ict_tcp_sends_once_and_timer_b_fires() -> None:
    layer = TransactionLayer()
    inv = request("INVITE", transport="TCP")
    key = layer.send_request(inv, TCP, True, 0.0)
    assert layer.next_deadline() == 32.0
    layer.handle_timer(32.0)
    assert without_terminated(events(layer)) == [TransactionTimedOut(key, inv)]
    assert drain(layer) == [(inv, TCP)]


def test_ict_provisional_stops_timer_a() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    key = layer.send_request(inv, UDP, False, 0.0)
    drain(layer)
    ringing = response(inv, 180)
    layer.receive_response(ringing, 0.3)
    assert events(layer) == [ResponseReceived(key, inv, ringing)]
    assert fire_until(layer, 100.0) == []  # no Timer A, no Timer B in Proceeding
    assert len(layer) == 1


def test_ict_non_2xx_final_is_acked_by_the_transaction() -> None:
    layer = TransactionLayer()
    inv = request("INVITE", routes=("<sip:10.0.0.1;lr>",))
    key = layer.send_request(inv, UDP, False, 0.0)
    drain(layer)
    busy = response(inv, 486, "dev-tag")
    layer.receive_response(busy, 1.0)
    assert events(layer) == [ResponseReceived(key, inv, busy)]
    [(ack, dest)] = drain(layer)
    assert dest == UDP
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == inv.uri
    assert ack.top_via.branch == "z9hG4bKaaa"
    assert len(ack.via) == 1  # RFC 3261 §17.1.1.3: only the top Via
    assert ack.to.tag == "dev-tag"
    assert ack.from_ == inv.from_ and ack.call_id == inv.call_id
    assert (ack.cseq.seq, ack.cseq.method) == (1, "ACK")
    assert ack.headers.get_all("Route") == ["<sip:10.0.0.1;lr>"]
    assert parse_message(ack.serialize()) == ack
    # a retransmitted final is ACKed again and not reported
    layer.receive_response(busy, 2.0)
    assert drain(layer) == [(ack, UDP)]
    assert events(layer) == []
    # Timer D: 32 s after the final on UDP
    assert layer.next_deadline() == 33.0
    layer.handle_timer(33.0)
    assert events(layer) == [TransactionTerminated(key)]
    assert len(layer) == 0


def test_ict_non_2xx_on_tcp_ends_at_once() -> None:
    layer = TransactionLayer()
    inv = request("INVITE", transport="TCP")
    layer.send_request(inv, TCP, True, 0.0)
    layer.receive_response(response(inv, 404), 0.1)
    assert [m.method for m, _ in drain(layer) if isinstance(m, Request)] == ["INVITE", "ACK"]
    assert len(layer) == 0


def test_ict_2xx_terminates_and_retransmission_is_stray() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    key = layer.send_request(inv, UDP, False, 0.0)
    drain(layer)
    ok = response(inv, 200)
    layer.receive_response(ok, 0.2)
    assert events(layer) == [ResponseReceived(key, inv, ok), TransactionTerminated(key)]
    assert drain(layer) == []  # the ACK for a 2xx is the dialog's job
    assert len(layer) == 0
    layer.receive_response(ok, 0.7)
    assert events(layer) == [StrayResponse(ok)]
    assert layer.stats["stray"] == 1
    layer.receive_response(response(inv, 486), 0.8)
    assert events(layer) == []
    assert layer.stats["unmatched_responses"] == 1


def test_make_cancel_and_make_ack() -> None:
    inv = request("INVITE", cseq=7, routes=("<sip:10.0.0.1;lr>",))
    cancel = make_cancel(inv)
    assert cancel.method == "CANCEL" and cancel.uri == inv.uri
    assert [str(v) for v in cancel.via] == [str(inv.top_via)]
    assert (cancel.cseq.seq, cancel.cseq.method) == (7, "CANCEL")
    assert cancel.to == inv.to and cancel.from_ == inv.from_ and cancel.call_id == inv.call_id
    assert cancel.headers.get_all("Route") == ["<sip:10.0.0.1;lr>"]
    with pytest.raises(ValueError):
        make_cancel(request("MESSAGE"))
    with pytest.raises(ValueError):
        make_ack(request("MESSAGE"), response(request("MESSAGE"), 400))


def test_cancel_waits_for_a_provisional() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    key = layer.send_request(inv, UDP, False, 0.0)
    drain(layer)
    layer.cancel(key, 0.1)
    assert drain(layer) == []  # RFC 3261 §9.1: not before a provisional
    layer.receive_response(response(inv, 100, None), 0.2)
    [(cancel, dest)] = drain(layer)
    assert isinstance(cancel, Request) and cancel.method == "CANCEL" and dest == UDP
    assert cancel.top_via.branch == inv.top_via.branch
    assert len(layer) == 2
    cancel_ok = response(cancel, 200)
    layer.receive_response(cancel_ok, 0.3)
    layer.receive_response(response(inv, 487), 0.35)
    evs = without_terminated(events(layer))
    assert [type(e) for e in evs] == [ResponseReceived] * 3
    assert isinstance(evs[1], ResponseReceived) and evs[1].key == "z9hG4bKaaa/CANCEL"
    assert isinstance(evs[2], ResponseReceived) and evs[2].response.status == 487
    assert [m.method for m, _ in drain(layer) if isinstance(m, Request)] == ["ACK"]
    run_out(layer)
    assert len(layer) == 0


def test_cancel_after_provisional_then_no_final_times_out() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    key = layer.send_request(inv, UDP, False, 0.0)
    layer.receive_response(response(inv, 180), 0.2)
    drain(layer)
    layer.cancel(key, 10.0)
    assert [m.method for m, _ in drain(layer) if isinstance(m, Request)] == ["CANCEL"]
    layer.cancel(key, 11.0)  # once is enough
    assert drain(layer) == []
    events(layer)
    fire_until(layer, 41.9)  # the CANCEL's own transaction retransmits and times out
    assert TransactionTimedOut(key, inv) not in events(layer)
    layer.handle_timer(42.0)  # RFC 3261 §9.1: 64·T1 after the CANCEL
    assert TransactionTimedOut(key, inv) in events(layer)
    assert len(layer) == 0


def test_cancel_rules() -> None:
    layer = TransactionLayer()
    key = layer.send_request(request(), UDP, False, 0.0)
    with pytest.raises(ValueError):
        layer.cancel(key, 0.1)
    layer.cancel("z9hG4bKgone/INVITE", 0.1)  # unknown: ignored
    inv = request("INVITE", branch="z9hG4bKinv")
    ikey = layer.send_request(inv, UDP, False, 0.0)
    layer.receive_response(response(inv, 200), 0.1)
    layer.cancel(ikey, 0.2)  # after a final: nothing
    assert all(m.method != "CANCEL" for m, _ in drain(layer) if isinstance(m, Request))


def test_ict_timer_c_backstop_cancels_then_gives_up() -> None:
    layer = TransactionLayer(TimerConfig(timer_c=60.0))
    inv = request("INVITE")
    key = layer.send_request(inv, UDP, False, 0.0)
    layer.receive_response(response(inv, 180), 1.0)
    layer.receive_response(response(inv, 180), 10.0)  # 101-199 resets it
    drain(layer)
    assert layer.next_deadline() == 70.0
    layer.handle_timer(70.0)
    assert [m.method for m, _ in drain(layer) if isinstance(m, Request)] == ["CANCEL"]
    _, evs = run_out(layer)
    assert TransactionTimedOut(key, inv) in evs
    assert len(layer) == 0


def test_send_request_rules() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError):
        layer.send_request(request(branch="old-style"), UDP, False, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request(branch=None), UDP, False, 0.0)
    layer.send_request(request(), UDP, False, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request(), UDP, False, 0.0)
    ack = request("ACK", "z9hG4bKnew")
    layer.send_request(ack, UDP, False, 0.0)
    assert len(layer) == 1  # ACK: no transaction
    assert drain(layer)[-1] == (ack, UDP)


# -- non-INVITE server ---------------------------------------------------------------------


def test_register_retransmission_is_absorbed_and_last_response_resent() -> None:
    layer = TransactionLayer()
    reg = request()
    assert layer.receive_request(reg, UDP, False, 0.0) is reg
    assert len(layer) == 1
    assert layer.receive_request(request(), UDP, False, 0.5) is None  # Trying: absorbed
    assert drain(layer) == []
    unauthorized = response(reg, 401)
    layer.send_response(unauthorized, 0.6)
    assert drain(layer) == [(unauthorized, UDP)]
    assert layer.receive_request(request(), UDP, False, 1.5) is None
    assert drain(layer) == [(unauthorized, UDP)]
    assert layer.stats["absorbed"] == 2
    assert layer.stats["retransmissions_sent"] == 1
    # Timer J: 64·T1 after the final on UDP
    assert layer.next_deadline() == pytest.approx(32.6)
    layer.handle_timer(32.6)
    assert len(layer) == 0
    # after Timer J the same request is new again
    assert layer.receive_request(request(), UDP, False, 33.0) is not None


def test_nist_provisional_resent_and_late_response_dropped() -> None:
    layer = TransactionLayer()
    msg = request("MESSAGE")
    layer.receive_request(msg, UDP, False, 0.0)
    trying = response(msg, 100, None)
    layer.send_response(trying, 0.1)
    layer.receive_request(request("MESSAGE"), UDP, False, 0.5)
    assert drain(layer) == [(trying, UDP), (trying, UDP)]
    layer.send_response(response(msg, 200), 0.6)
    layer.send_response(response(msg, 500), 0.7)
    assert [r.status for r, _ in drain(layer) if isinstance(r, Response)] == [200]
    assert layer.stats["dropped_responses"] == 1


def test_nist_tcp_timer_j_zero() -> None:
    layer = TransactionLayer()
    reg = request(transport="TCP")
    layer.receive_request(reg, TCP, True, 0.0)
    ok = response(reg, 200)
    layer.send_response(ok, 0.1)
    assert len(layer) == 0
    assert drain(layer) == [(ok, TCP)]


def test_nist_unanswered_is_abandoned_after_64_t1() -> None:
    layer = TransactionLayer()
    layer.receive_request(request(), UDP, False, 0.0)
    assert layer.next_deadline() == 32.0
    layer.handle_timer(32.0)
    assert len(layer) == 0
    assert layer.stats["abandoned"] == 1


def test_merged_request_gets_482() -> None:
    layer = TransactionLayer()
    first = request("MESSAGE", "z9hG4bKone")
    assert layer.receive_request(first, UDP, False, 0.0) is first
    other_path = ("udp", "10.0.0.8", 5060)
    merged = request("MESSAGE", "z9hG4bKtwo", host="10.0.0.8")
    assert layer.receive_request(merged, other_path, False, 0.1) is None
    [(resp, dest)] = drain(layer)
    assert isinstance(resp, Response) and resp.status == 482 and dest == other_path
    assert resp.to.tag
    assert layer.stats["merged"] == 1
    # the merged copy's retransmission gets the 482 again
    assert layer.receive_request(merged, other_path, False, 0.6) is None
    assert drain(layer) == [(resp, other_path)]
    # in-dialog (To tag): not a merge check
    in_dialog = request("MESSAGE", "z9hG4bKthree", to_tag="x")
    assert layer.receive_request(in_dialog, UDP, False, 0.7) is in_dialog


def test_overload_answers_503_with_retry_after() -> None:
    layer = TransactionLayer(max_transactions=2)
    for i in range(2):
        layer.receive_request(request(branch=f"z9hG4bK{i}", call_id=f"c{i}"), UDP, False, 0.0)
    third = request(branch="z9hG4bK3", call_id="c3")
    assert layer.receive_request(third, UDP, False, 0.0) is None
    [(resp, dest)] = drain(layer)
    assert isinstance(resp, Response) and resp.status == 503 and dest == UDP
    assert resp.headers.get("Retry-After") == str(OVERLOAD_RETRY_AFTER)
    assert len(layer) == 2
    assert layer.stats["overload"] == 1
    # a retransmission of a live request is still absorbed
    assert layer.receive_request(request(branch="z9hG4bK0", call_id="c0"), UDP, False, 0.1) is None
    assert layer.stats["overload"] == 1


def test_stateless_response_needs_dest() -> None:
    layer = TransactionLayer()
    req = request()
    resp = response(req, 481)
    layer.send_response(resp, 0.0)
    assert drain(layer) == []
    assert layer.stats["unsent_responses"] == 1
    layer.send_response(resp, 0.0, dest=UDP)
    assert drain(layer) == [(resp, UDP)]
    assert len(layer) == 0


# -- INVITE server -------------------------------------------------------------------------


def test_invite_retransmission_resends_last_provisional() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    assert layer.receive_request(inv, UDP, False, 0.0) is inv
    assert layer.receive_request(request("INVITE"), UDP, False, 0.5) is None
    assert drain(layer) == []  # no provisional yet: the TU decides on 100
    trying = response(inv, 100, None)
    layer.send_response(trying, 0.6)
    layer.receive_request(request("INVITE"), UDP, False, 1.5)
    assert drain(layer) == [(trying, UDP), (trying, UDP)]


def test_invite_2xx_retransmitted_until_ack() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.receive_request(inv, UDP, False, 0.0)
    ok = response(inv, 200)
    layer.send_response(ok, 0.0)
    assert drain(layer) == [(ok, UDP)]
    log = fire_until(layer, 12.0)
    assert sent_at(log) == [0.5, 1.5, 3.5, 7.5, 11.5]  # T1 doubling, capped at T2
    ack = ack_for_2xx(inv)
    assert layer.receive_request(ack, UDP, False, 12.0) is ack  # for the TU too
    assert fire_until(layer, 31.9) == []
    layer.handle_timer(32.0)  # Timer L
    assert without_terminated(events(layer)) == []
    assert len(layer) == 0


def test_invite_2xx_without_ack_times_out_with_timer_l() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.receive_request(inv, UDP, False, 0.0)
    ok = response(inv, 200)
    layer.send_response(ok, 1.0)
    log = fire_until(layer, 32.9)
    assert sent_at(log) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    layer.handle_timer(33.0)
    assert events(layer) == [AckTimedOut(inv, ok), TransactionTerminated(server_key(inv))]
    assert layer.stats["timeouts"] == 1
    assert len(layer) == 0


def test_invite_2xx_on_tcp_not_retransmitted() -> None:
    layer = TransactionLayer()
    inv = request("INVITE", transport="TCP")
    layer.receive_request(inv, TCP, True, 0.0)
    ok = response(inv, 200)
    layer.send_response(ok, 0.0)
    assert layer.next_deadline() == 32.0
    layer.handle_timer(32.0)
    assert drain(layer) == [(ok, TCP)]
    assert [type(e) for e in events(layer)] == [AckTimedOut, TransactionTerminated]


def test_invite_non_2xx_timer_g_then_timer_h() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.receive_request(inv, UDP, False, 0.0)
    busy = response(inv, 486)
    layer.send_response(busy, 0.0)
    drain(layer)
    log = fire_until(layer, 31.9)
    assert sent_at(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    layer.handle_timer(32.0)
    assert without_terminated(events(layer)) == [AckTimedOut(inv, busy)]
    assert len(layer) == 0


def test_invite_non_2xx_ack_absorbed_then_timer_i() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.receive_request(inv, UDP, False, 0.0)
    layer.send_response(response(inv, 486), 0.0)
    fire_until(layer, 0.5)
    ack = make_ack(inv, response(inv, 486))
    assert layer.receive_request(ack, UDP, False, 1.0) is None
    assert layer.receive_request(ack, UDP, False, 1.2) is None  # Confirmed absorbs ACKs
    assert layer.receive_request(request("INVITE"), UDP, False, 1.3) is None
    assert drain(layer) == []
    assert layer.next_deadline() == 6.0  # Timer I = T4
    layer.handle_timer(6.0)
    assert without_terminated(events(layer)) == []
    assert len(layer) == 0


def test_invite_non_2xx_ack_with_wrong_branch_is_absorbed() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.receive_request(inv, UDP, False, 0.0)
    layer.send_response(response(inv, 403), 0.0)
    ack = ack_for_2xx(inv, "z9hG4bKbroken")
    assert layer.receive_request(ack, UDP, False, 0.2) is None
    assert layer.next_deadline() == pytest.approx(5.2)


def test_invite_non_2xx_tcp_ack_ends_at_once() -> None:
    layer = TransactionLayer()
    inv = request("INVITE", transport="TCP")
    layer.receive_request(inv, TCP, True, 0.0)
    layer.send_response(response(inv, 404), 0.0)
    assert layer.next_deadline() == 32.0  # Timer H, no Timer G
    layer.receive_request(make_ack(inv, response(inv, 404)), TCP, True, 0.1)
    assert len(layer) == 0


def test_unmatched_ack_goes_to_the_tu() -> None:
    layer = TransactionLayer()
    ack = ack_for_2xx(request("INVITE"))
    assert layer.receive_request(ack, UDP, False, 0.0) is ack
    assert len(layer) == 0


def test_a_response_to_an_ack_is_never_sent() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.receive_request(inv, UDP, False, 0.0)
    layer.send_response(response(ack_for_2xx(inv, inv.top_via.branch or ""), 200), 0.1)
    assert drain(layer) == []
    assert layer.stats["dropped_responses"] == 1


def test_cancel_flow_on_the_server() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.receive_request(inv, UDP, False, 0.0)
    layer.send_response(response(inv, 100, None), 0.0)
    cancel = make_cancel(inv)
    assert layer.receive_request(cancel, UDP, False, 1.0) is cancel
    assert layer.find_invite_for_cancel(cancel) is inv
    ok = response(cancel, 200)
    layer.send_response(ok, 1.0)
    terminated = response(inv, 487)
    layer.send_response(terminated, 1.0)
    assert [r.status for r, _ in drain(layer) if isinstance(r, Response)] == [100, 200, 487]
    layer.receive_request(make_ack(inv, terminated), UDP, False, 1.1)
    assert layer.receive_request(make_cancel(inv), UDP, False, 1.2) is None  # retransmission
    assert drain(layer) == [(ok, UDP)]  # the same bytes (kept as a Wire)
    run_out(layer)
    assert len(layer) == 0
    stray = make_cancel(request("INVITE", "z9hG4bKnothing"))
    assert layer.find_invite_for_cancel(stray) is None
    assert layer.receive_request(stray, UDP, False, 50.0) is stray  # the TU answers 481


def test_cancel_passes_overload_when_it_matches() -> None:
    layer = TransactionLayer(max_transactions=1)
    inv = request("INVITE")
    layer.receive_request(inv, UDP, False, 0.0)
    cancel = make_cancel(inv)
    assert layer.receive_request(cancel, UDP, False, 0.1) is cancel
    assert layer.stats["overload"] == 0


def test_invite_unanswered_is_abandoned_after_timer_c() -> None:
    layer = TransactionLayer(TimerConfig(timer_c=60.0))
    inv = request("INVITE")
    layer.receive_request(inv, UDP, False, 0.0)
    layer.send_response(response(inv, 180), 10.0)
    assert layer.next_deadline() == 70.0
    layer.handle_timer(70.0)
    assert len(layer) == 0
    assert layer.stats["abandoned"] == 1
    layer.send_response(response(inv, 200), 71.0)  # too late: nowhere to send
    assert layer.stats["unsent_responses"] == 1


def test_ist_standalone_shape() -> None:
    inv = request("INVITE")
    txn = InviteServerTransaction(inv, UDP, False, 0.0)
    assert txn.state is TransactionState.PROCEEDING
    ok = response(inv, 200)
    assert txn.send_response(ok, 0.0)
    assert txn.datagrams_to_send() == [(ok, UDP)]
    assert state_of(txn) is TransactionState.ACCEPTED
    assert txn.receive_ack(0.1) is True
    assert txn.next_deadline() == 32.0
    assert not txn.send_response(response(inv, 500), 0.2)
    assert txn.send_response(ok, 0.3)  # RFC 6026: a TU 2xx passes through
    ict = InviteClientTransaction(request("INVITE"), UDP, False, 0.0)
    assert ict.state is TransactionState.CALLING
    with pytest.raises(ValueError):
        NonInviteServerTransaction(inv, UDP, False, 0.0)


# -- RFC 2543 peers (no magic cookie) ------------------------------------------------------


def test_rfc2543_branchless_matching() -> None:
    layer = TransactionLayer()
    reg = request(branch=None)
    assert layer.receive_request(reg, UDP, False, 0.0) is reg
    ok = response(reg, 200)
    layer.send_response(ok, 0.1)
    assert layer.receive_request(request(branch=None), UDP, False, 0.5) is None
    assert drain(layer) == [(ok, UDP), (ok, UDP)]
    # an old-style branch parameter without the cookie matches the same way
    msg = request("MESSAGE", branch="1234", call_id="c-2543")
    assert layer.receive_request(msg, UDP, False, 1.0) is msg
    # the next CSeq is a new transaction
    assert layer.receive_request(request(branch=None, cseq=2), UDP, False, 1.0) is not None
    # INVITE + non-2xx: the ACK (same CSeq number, no branch) is absorbed
    inv = request("INVITE", branch=None, call_id="c-inv")
    layer.receive_request(inv, UDP, False, 2.0)
    layer.send_response(response(inv, 486), 2.0)
    assert layer.receive_request(make_ack(inv, response(inv, 486)), UDP, False, 2.1) is None
    assert layer.next_deadline() == pytest.approx(2.1 + 5.0)  # Timer I, the ACK matched
    run_out(layer)
    assert len(layer) == 0


# -- bursts, leaks, random interleavings ---------------------------------------------------


def test_burst_of_10000_transactions_leaves_nothing() -> None:
    layer = TransactionLayer()
    keys = []
    for i in range(5_000):
        req = request(branch=f"z9hG4bKc{i}", call_id=f"c{i}")
        keys.append(layer.send_request(req, UDP, False, i * 0.001))
        if i % 2:
            layer.receive_response(response(req, 200), i * 0.001 + 0.05)
    for i in range(5_000):
        reg = request(branch=f"z9hG4bKs{i}", call_id=f"s{i}")
        assert layer.receive_request(reg, UDP, False, 5.0) is reg
        if i % 3:
            layer.send_response(response(reg, 200), 5.0)
    assert len(layer) == 10_000
    layer.datagrams_to_send()
    events(layer)
    layer.handle_timer(10_000.0)
    assert len(layer) == 0
    assert layer.next_deadline() is None
    assert layer._heap == []  # white box: no stale entries left behind


def test_heap_stays_bounded_under_churn() -> None:
    layer = TransactionLayer()
    invites = [request("INVITE", f"z9hG4bKh{i}", call_id=f"h{i}") for i in range(10)]
    ringing = [response(inv, 180) for inv in invites]
    for inv in invites:
        layer.send_request(inv, UDP, False, 0.0)
    for step in range(3_000):
        for r in ringing:  # each 180 resets Timer C: a new heap entry, the old one stale
            layer.receive_response(r, 1.0 + step)
    assert len(layer._heap) <= 2 * len(layer) + 1024 + 1  # white box: compacted
    assert layer.next_deadline() == 3_000.0 + layer.timers.timer_c


_POOL_SERVER = [
    request("REGISTER", "z9hG4bKr1", call_id="r"),
    request("REGISTER", "z9hG4bKr2", call_id="r"),  # merged with r1
    request("MESSAGE", "z9hG4bKm1", call_id="m", transport="TCP"),
    request("INVITE", "z9hG4bKi1", call_id="i"),
    request("INVITE", None, call_id="legacy"),
    request("INVITE", "z9hG4bKi2", call_id="i2", to_tag="dlg"),
]
_POOL_SERVER += [make_cancel(_POOL_SERVER[3]), make_cancel(_POOL_SERVER[4])]
_POOL_SERVER += [
    make_ack(_POOL_SERVER[3], response(_POOL_SERVER[3], 486)),
    ack_for_2xx(_POOL_SERVER[3]),
    make_ack(_POOL_SERVER[4], response(_POOL_SERVER[4], 486)),
    ack_for_2xx(_POOL_SERVER[5], "z9hG4bKack-dlg"),
]
_STATUSES = [100, 180, 200, 202, 401, 486, 487, 500]

_op = st.one_of(
    st.tuples(st.just("in"), st.integers(0, len(_POOL_SERVER) - 1)),
    st.tuples(st.just("answer"), st.integers(0, 7), st.sampled_from(_STATUSES)),
    st.tuples(st.just("send"), st.sampled_from(["INVITE", "MESSAGE"]), st.booleans()),
    st.tuples(st.just("reply"), st.integers(0, 20), st.sampled_from(_STATUSES)),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.just("tick"), st.floats(0.0, 40.0, allow_nan=False)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=40), st.integers(1, 8))
def test_random_interleavings_never_raise_or_leak(ops: list[tuple[object, ...]], cap: int) -> None:
    layer = TransactionLayer(max_transactions=cap)
    now = 0.0
    sent: list[Request] = []
    branches = itertools.count()
    for op in ops:
        match op:
            case ("in", int(i)):
                req = _POOL_SERVER[i]
                reliable = req.top_via.transport == "TCP"
                layer.receive_request(req, TCP if reliable else UDP, reliable, now)
            case ("answer", int(i), int(status)):
                req = _POOL_SERVER[i]
                layer.send_response(response(req, status, None if status == 100 else "t"), now)
            case ("send", str(method), bool(reliable)):
                req = request(method, f"z9hG4bKc{next(branches)}", call_id=f"out{len(sent)}")
                layer.send_request(req, TCP if reliable else UDP, reliable, now)
                sent.append(req)
            case ("reply", int(j), int(status)) if sent:
                target = sent[j % len(sent)]
                layer.receive_response(response(target, status), now)
                if target.method == "INVITE" and status >= 200:
                    layer.receive_response(response(make_cancel(target), 200), now)
            case ("cancel", int(j)) if sent:
                target = sent[j % len(sent)]
                if target.method == "INVITE":
                    layer.cancel(f"{target.top_via.branch}/INVITE", now)
            case ("tick", float(dt)):
                now += dt
                layer.handle_timer(now)
            case _:
                pass
        for msg, dest in layer.datagrams_to_send():
            assert dest in (UDP, TCP)
            assert isinstance(msg, Request | Response | Wire)  # Wire: a completed NIST resends
        events(layer)
        deadline = layer.next_deadline()
        assert deadline is None or len(layer) > 0
    timers = layer.timers
    last, _ = run_out(layer)
    assert len(layer) == 0
    # the longest chain: a Proceeding INVITE's Timer C, then 64·T1 for its CANCEL
    assert last <= now + timers.timer_c + 2 * timers.timeout + timers.t4 + 1.0


def test_completed_nist_keeps_only_wire_bytes_and_releases_the_request() -> None:
    layer = TransactionLayer()
    reg = request()
    layer.receive_request(reg, UDP, False, 0.0)
    (txn,) = layer._servers.values()  # the one transaction
    assert txn.request is reg
    ok = response(reg, 200)
    layer.send_response(ok, 0.1)
    assert drain(layer) == [(ok, UDP)]
    assert isinstance(txn, NonInviteServerTransaction)
    assert isinstance(txn.last_response, Wire) and txn.last_response.data == ok.serialize()
    with pytest.raises(RuntimeError):
        txn.request  # noqa: B018  # released: nothing may read it after the final
    # a retransmission still gets the same bytes, and Timer J still removes it cleanly
    assert layer.receive_request(request(), UDP, False, 1.0) is None
    assert drain(layer) == [(ok, UDP)]
    run_out(layer)
    assert len(layer) == 0 and layer._by_request_id == {}
