"""Weighted rendezvous hashing: stable, balanced, moves few bots, honours capacity."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import pytest

from fleet import assignment
from fleet.assignment import assign, desired_owner, hrw_score

BOTS = [f"b{i:05d}" for i in range(10_000)]
FIVE = {f"i{n}": 1.0 for n in range(5)}


def test_the_score_is_the_documented_formula_on_a_stable_hash() -> None:
    h = int.from_bytes(hashlib.blake2b(b"bot-7\x00node-a", digest_size=8).digest(), "big")
    u = (h + 0.5) / 2**64
    assert hrw_score("bot-7", "node-a") == -1.0 / math.log(u)
    assert hrw_score("bot-7", "node-a", 3.0) == pytest.approx(3 * hrw_score("bot-7", "node-a"))
    assert hrw_score("bot-7", "node-a") > 0


def test_known_values_do_not_change_between_runs() -> None:
    # Pinned literals: every instance (other process, other PYTHONHASHSEED, other
    # release) must compute the same owners, or two of them would chase one bot.
    assert hrw_score("b00000", "alpha") == pytest.approx(0.9495132872158701, rel=1e-12)
    instances = {"alpha": 1.0, "bravo": 1.0, "charlie": 1.0}
    expected = {
        "b00000": "bravo",
        "b00001": "alpha",
        "b00002": "bravo",
        "b00003": "charlie",
        "b00004": "alpha",
        "b00005": "bravo",
    }
    assert assign(expected, instances) == expected
    assert assign(expected, instances) == assign(list(expected), dict(instances))


def test_the_owner_does_not_depend_on_mapping_order() -> None:
    forward = {f"node-{n}": 1.0 + n % 3 for n in range(7)}
    backward = dict(reversed(list(forward.items())))
    bots = BOTS[:500]
    assert assign(bots, forward) == assign(bots, backward)


def test_equal_scores_go_to_the_smallest_instance_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assignment, "hrw_score", lambda bot, instance, weight=1.0: 1.0)
    assert desired_owner("b1", {"zulu": 1.0, "alpha": 1.0, "mike": 1.0}) == "alpha"
    assert desired_owner("b1", {"mike": 1.0, "zulu": 1.0, "alpha": 1.0}) == "alpha"


def test_equal_instances_share_the_bots_evenly() -> None:
    loads = Counter(assign(BOTS, FIVE).values())
    assert set(loads) == set(FIVE)
    for instance, load in loads.items():
        assert 1800 <= load <= 2200, (instance, load)


def test_a_join_moves_only_bots_to_the_newcomer_about_one_in_n() -> None:
    before = assign(BOTS, FIVE)
    after = assign(BOTS, {**FIVE, "i5": 1.0})
    moved = [bot for bot in BOTS if before[bot] != after[bot]]
    assert all(after[bot] == "i5" for bot in moved)
    assert set(moved) == {bot for bot in BOTS if after[bot] == "i5"}
    assert abs(len(moved) / len(BOTS) - 1 / 6) <= 0.03


def test_a_leave_moves_only_the_leavers_bots() -> None:
    before = assign(BOTS, FIVE)
    survivors = {k: v for k, v in FIVE.items() if k != "i2"}
    after = assign(BOTS, survivors)
    moved = {bot for bot in BOTS if before[bot] != after[bot]}
    assert moved == {bot for bot in BOTS if before[bot] == "i2"}
    # The leaver's bots spread over every survivor, not onto one neighbour.
    assert set(Counter(after[bot] for bot in moved)) == set(survivors)


def test_capacity_weights_set_the_share() -> None:
    loads = Counter(assign(BOTS, {"big": 2.0, "small-a": 1.0, "small-b": 1.0}).values())
    assert abs(loads["big"] / len(BOTS) - 0.5) <= 0.05
    assert abs(loads["small-a"] / len(BOTS) - 0.25) <= 0.05
    assert abs(loads["small-b"] / len(BOTS) - 0.25) <= 0.05


def test_no_eligible_instance_means_no_owner() -> None:
    assert desired_owner("b1", {}) is None
    assert desired_owner("b1", {"a": 0.0, "b": -1.0, "c": math.nan}) is None
    assert assign(["b1", "b2"], {}) == {"b1": None, "b2": None}
    assert assign([], FIVE) == {}


def test_zero_capacity_instances_are_skipped() -> None:
    owners = assign(BOTS[:1000], {"live": 1.0, "draining": 0.0})
    assert set(owners.values()) == {"live"}
