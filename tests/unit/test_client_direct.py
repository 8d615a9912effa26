"""The weighted round robin behind PredictClient's DIRECT mode (no server needed)."""

from __future__ import annotations

from collections import Counter

import pytest

from eas.client import PredictClient, WeightedRoundRobin


def test_shares_follow_weights_and_interleave() -> None:
    wrr = WeightedRoundRobin()
    wrr.update([("a", 300), ("b", 100)])
    picks = [wrr.next() for _ in range(8)]
    assert Counter(picks) == {"a": 6, "b": 2}
    assert "bb" not in "".join(p or "" for p in picks), "smooth: never two b in a row at 3:1"


def test_equal_weights_alternate() -> None:
    wrr = WeightedRoundRobin()
    wrr.update([("a", 100), ("b", 100)])
    picks = [wrr.next() for _ in range(6)]
    assert picks in (["a", "b"] * 3, ["b", "a"] * 3)


def test_update_adds_drops_and_skips_zero_weight() -> None:
    wrr = WeightedRoundRobin()
    assert wrr.next() is None
    wrr.update([("a", 100)])
    assert {wrr.next() for _ in range(3)} == {"a"}
    wrr.update([("a", 100), ("b", 100), ("z", 0)])
    assert Counter(wrr.next() for _ in range(10)) == {"a": 5, "b": 5}
    assert wrr.endpoints() == [("a", 100), ("b", 100)]
    wrr.update([("b", 100)])
    assert {wrr.next() for _ in range(3)} == {"b"}


def test_endpoint_type_is_checked() -> None:
    with pytest.raises(ValueError, match="DIRECT"):
        PredictClient("http://127.0.0.1:1", "svc", endpoint_type="VIPSERVER")
