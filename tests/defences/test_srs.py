"""SRS for forwards: rewriting, bounces routed back, forgeries refused."""
from __future__ import annotations

import pytest

from correo_server.srs import Srs, SrsError, generate_key, is_srs, load_keys, refusal

DAY = 86400
NOW = 1_790_000_000.0


def srs(clock=NOW, keys=(b"first-secret",), domain="example.com"):
    return Srs(list(keys), domain, clock=lambda: clock)


def test_a_forwarded_sender_round_trips():
    rewritten = srs().forward("alice@sender.example")
    assert rewritten.endswith("@example.com") and rewritten.startswith("SRS0=")
    assert is_srs(rewritten)
    assert srs().reverse(rewritten) == "alice@sender.example"


def test_case_changes_in_transit_do_not_break_it():
    rewritten = srs().forward("Alice@Sender.Example")
    assert srs().reverse(rewritten.upper()).lower() == "alice@sender.example"


def test_the_null_sender_and_our_own_addresses_are_not_rewritten():
    assert srs().forward("") == ""
    assert srs().forward("bob@Example.com") == "bob@Example.com"


@pytest.mark.parametrize("tamper", [
    lambda a: a.replace("sender.example", "victim.example"),  # another original domain
    lambda a: a.replace("alice", "mallory"),  # another original user
    lambda a: "SRS0=AAAA=" + a.split("=", 2)[2],  # a made-up hash
])
def test_forged_addresses_are_refused(tamper):
    rewritten = srs().forward("alice@sender.example")
    with pytest.raises(SrsError):
        srs().reverse(tamper(rewritten))


def test_another_sites_key_does_not_verify():
    rewritten = srs(keys=(b"someone-else",)).forward("alice@sender.example")
    with pytest.raises(SrsError, match="signature"):
        srs().reverse(rewritten)


def test_old_bounce_addresses_expire_after_21_days():
    rewritten = srs().forward("alice@sender.example")
    assert srs(clock=NOW + 21 * DAY).reverse(rewritten) == "alice@sender.example"
    with pytest.raises(SrsError, match="days old"):
        srs(clock=NOW + 22 * DAY).reverse(rewritten)


def test_keys_rotate_without_losing_bounces_in_flight():
    old = srs(keys=(b"old",)).forward("alice@sender.example")
    rotated = srs(keys=(b"new", b"old"))
    assert rotated.reverse(old) == "alice@sender.example"
    assert rotated.forward("alice@sender.example") != old


def test_a_second_forwarder_sends_bounces_back_through_the_first():
    first = srs(domain="first.example").forward("alice@sender.example")
    second = Srs([b"second-secret"], "second.example", clock=lambda: NOW)
    twice = second.forward(first)
    assert twice.startswith("SRS1=") and twice.endswith("@second.example")
    back_to_first = second.reverse(twice)
    assert back_to_first == first
    assert srs(domain="first.example").reverse(back_to_first) == "alice@sender.example"
    third = Srs([b"third"], "third.example", clock=lambda: NOW).forward(twice)
    assert "first.example==" in third, "a third hop still points at the first forwarder"


def test_not_srs_at_all_is_an_error_and_the_refusal_is_550_5_1_1():
    with pytest.raises(SrsError) as caught:
        srs().reverse("bob@example.com")
    reply = refusal(caught.value)
    assert (reply.code, reply.status, reply.reason) == (550, "5.1.1", "srs_invalid")


def test_the_key_file(tmp_path):
    path = tmp_path / "srs.key"
    path.write_text(f"# SRS keys, newest first\n{generate_key()}\n\n{generate_key()}\n")
    keys = load_keys(path)
    assert len(keys) == 2 and all(len(k) >= 40 for k in keys)
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no SRS key"):
        load_keys(tmp_path / "empty")
