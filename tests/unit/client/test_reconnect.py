"""The client's reconnect state machine (kpd.reconnect), driven by a hand-set clock."""

from __future__ import annotations

import random

import pytest

from kpd.reconnect import JITTER, Reconnector, unreachable


def _link(max_block_s: float = 10.0, seed: int = 1) -> Reconnector:
    return Reconnector(0.05, 1.0, max_block_s, random.Random(seed))


def test_first_attempt_is_due_at_once_after_a_loss():
    link = _link()
    link.lost(100.0, "kpd closed the socket")
    assert not link.connected
    assert link.due_in(100.0) == 0


def test_delays_double_from_the_initial_backoff_up_to_the_max_within_the_jitter():
    link = _link()
    link.lost(0.0, "gone")
    now = 0.0
    for attempt, nominal in enumerate([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0], start=1):
        due = link.failed(now, "refused")
        assert nominal * (1 - JITTER) <= due - now <= nominal * (1 + JITTER), attempt
        assert link.attempts == attempt
        now = due


def test_jitter_spreads_clients_that_lost_kpd_at_the_same_instant():
    delays = {round(_link(seed=seed).delay(3), 6) for seed in range(20)}
    assert len(delays) > 10  # not all apps knock at once when kpd comes back
    assert all(0.2 * (1 - JITTER) <= d <= 0.2 * (1 + JITTER) for d in delays)


def test_success_resets_the_backoff_and_a_later_loss_starts_a_new_outage():
    link = _link()
    link.lost(0.0, "gone")
    for _ in range(5):
        link.failed(1.0, "refused")
    link.succeeded()
    assert link.connected and link.attempts == 0
    link.lost(50.0, "again")
    assert link.since == 50.0
    assert link.failed(50.0, "refused") - 50.0 <= 0.05 * (1 + JITTER)


def test_records_stop_waiting_after_max_block_of_outage():
    link = _link(max_block_s=2.0)
    assert not link.expired(1e9)  # connected: nothing expires
    link.lost(10.0, "gone")
    link.lost(11.0, "still gone")  # a second report of the same outage keeps its start
    assert not link.expired(11.99)
    assert link.expired(12.0)
    message = link.outage_message("/run/kpd/kpd.sock", 12.5)
    assert "for 2.5 s" in message and "max.block.ms 2000" in message
    assert "still gone" in message and "is kpd running? socket: /run/kpd/kpd.sock" in message


def test_backoff_settings_are_checked():
    with pytest.raises(ValueError):
        Reconnector(0.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        Reconnector(2.0, 1.0, 1.0)


def test_unreachable_keeps_the_error_type_and_names_the_socket():
    error = unreachable("/x/kpd.sock", FileNotFoundError(2, "No such file or directory"))
    assert isinstance(error, FileNotFoundError) and error.errno == 2
    assert str(error) == (
        "[Errno 2] cannot connect to kpd: No such file or directory; "
        "is kpd running? socket: /x/kpd.sock"
    )
