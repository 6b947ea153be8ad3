"""The balance's trend: inflow from outside the forwards, refills and forwards accounted for."""
import pytest

import dataclasses
import json

from modules.balance_trend import MIN_SPAN_HOURS, BalanceMark, observe
from modules.fee_controller import FeeState

H = 3600
T0 = 1_000 * H + 1800          # half past an hour
M = 1_000_000                  # msat per hour of the examples
CAPACITY = 1_000 * M


def run(hours, local_at, net_by_hour, refilled_at=lambda t: 0, step_hours=0.5, mark=None):
    """Marks observed every half hour from T0 for `hours`; local_at(t), refilled_at(t)."""
    t = T0
    while t <= T0 + hours * H:
        seen = {h: v for h, v in net_by_hour.items() if h * H <= t}   # the rollups as of t
        mark = observe(mark, local_at(t), CAPACITY, seen, 900, refilled_at(t), t)
        t += step_hours * H
    return mark


def test_a_balance_that_holds_while_forwards_drain_it_is_refilled_from_outside():
    out_per_hour = {h: -M for h in range(990, 1200)}         # 1 M msat/h leaves, nothing enters
    mark = run(72, lambda t: 50 * M, out_per_hour)
    assert mark.outside_msat_per_hour == pytest.approx(M, rel=0.15)
    assert mark.supply_msat_per_hour > 0.85 * M


def test_a_balance_that_falls_as_its_forwards_say_has_no_outside_inflow():
    out_per_hour = {h: -M for h in range(990, 1200)}
    # local falls 1 M msat per hour, the rollup hour by hour (as a node's balance does)
    mark = run(72, lambda t: 500 * M + sum(out_per_hour[h] for h in range(1000, int(t // H) + 1)),
               out_per_hour)
    assert abs(mark.outside_msat_per_hour) < 0.01 * M
    assert mark.supply_msat_per_hour < 0.01 * M


def test_refills_bought_into_the_channel_are_not_outside_inflow():
    refill_at = T0 + 20 * H

    def refilled(t):
        return 30 * M if t >= refill_at else 0
    mark = run(48, lambda t: 10 * M + refilled(t), {}, refilled_at=refilled)
    assert abs(mark.outside_msat_per_hour) < 1e-6 * M


def test_outflow_the_forwards_do_not_explain_adds_no_supply():
    mark = run(48, lambda t: 500 * M - int((t - T0) / H * M), {})    # falls with no forwards
    assert mark.outside_msat_per_hour < -0.5 * M
    assert mark.supply_msat_per_hour == 0


def test_marks_closer_than_the_minimum_span_keep_the_first():
    first = observe(None, 10 * M, CAPACITY, {}, 900, 0, T0)
    later = observe(first, 90 * M, CAPACITY, {}, 900, 0, T0 + (MIN_SPAN_HOURS - 0.5) * H)
    assert later == first


def test_a_mark_older_than_the_rollups_given_starts_again_without_counting_the_span():
    first = dataclasses.replace(observe(None, 10 * M, CAPACITY, {}, 900, 0, T0), outside_msat_per_hour=M)
    again = observe(first, 90 * M, CAPACITY, {}, 1_001, 0, T0 + 12 * H)   # rollups from hour 1001 only
    assert again.at == T0 + 12 * H and again.local_msat == 90 * M
    assert again.outside_msat_per_hour == M           # the 80 M msat jump is not read as inflow


def test_a_channel_added_to_the_peer_is_not_inflow():
    # a second channel of 200 M msat local opens to the peer: the summed balance jumps
    before = run(48, lambda t: 50 * M, {})
    after = observe(before, 250 * M, CAPACITY + 400 * M, {}, 900, 0, before.at + 7 * H)
    assert after.outside_msat_per_hour == 0.0 and after.capacity_msat == CAPACITY + 400 * M
    later = observe(after, 250 * M, CAPACITY + 400 * M, {}, 900, 0, after.at + 7 * H)
    assert later.outside_msat_per_hour == 0.0


def test_the_mark_survives_the_states_json_and_a_bad_one_is_dropped():
    mark = run(24, lambda t: 50 * M, {h: -M for h in range(990, 1200)})
    state = FeeState(100, balance_mark=mark)
    assert FeeState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    newer = dict(state.to_dict(), balance_mark=dict(mark.__dict__, written_by="a later version"))
    assert FeeState.from_dict(newer).balance_mark == mark          # an unknown field: ignored
    broken = dict(state.to_dict(), balance_mark={"at": 1.0})
    assert FeeState.from_dict(broken).balance_mark is None           # cannot be read: start again
    assert BalanceMark.from_dict({"at": "x"}) is None
