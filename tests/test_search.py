"""Budget parsing and the within-budget rule, UPEM's distances, and the evolutionary search with small fake
predictors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from slimda.errors import ConfigError
from slimda.model.space import Site, WidthSpace
from slimda.select.budget import Budget, Budgets, latency_budget, parse_count, parse_latency
from slimda.select.search import Constraint, InfeasibleBudget, SearchSettings, evolutionary_search
from slimda.select.upem import DISTANCES, upem


@pytest.mark.parametrize("text, ms", [("20ms", 20.0), ("20 ms", 20.0), ("0.02s", 20.0), ("500us", 0.5),
                                      ("1.5e1ms", 15.0), (" 7.5 MS ", 7.5)])
def test_latency_budgets_parse(text, ms):
    budget = parse_latency(text)
    assert budget.kind == "latency" and budget.value == pytest.approx(ms)


@pytest.mark.parametrize("text, count", [("300M", 3e8), ("1.2G", 1.2e9), ("1.2GFLOPs", 1.2e9), ("5e8", 5e8),
                                         ("800kflops", 8e5)])
def test_flops_budgets_parse(text, count):
    assert parse_count(text, "flops").value == pytest.approx(count)


@pytest.mark.parametrize("text", ["20", "fast", "-3ms", "0ms", "20 mss", "ms", "20 min"])
def test_malformed_latency_budgets_are_refused(text):
    with pytest.raises(ConfigError, match="cannot read latency budget"):
        parse_latency(text)


def test_malformed_counts_are_refused():
    with pytest.raises(ConfigError, match="cannot read flops budget"):
        parse_count("1.2T", "flops")
    with pytest.raises(ConfigError, match="cannot read params budget"):
        parse_count("lots", "params")
    assert parse_count("2.5M", "params").value == 2.5e6


def test_within_budget_is_one_rule_with_its_tolerance():
    budget = Budget("latency", 10.0, "10ms")
    assert budget.allows(10.0) and not budget.allows(10.01)
    assert budget.allows(10.49, tolerance=0.05) and not budget.allows(10.51, tolerance=0.05)
    budgets = Budgets(latency=budget)
    assert budgets.latency_met(10.3) is False and budgets.latency_met(10.3, tolerance=0.05) is True
    assert budgets.latency_met(None) is None  # not measured: no verdict
    assert Budgets(flops=parse_count("5M", "flops")).latency_met(3.0) is None  # no latency budget: no verdict


def test_budgets_round_trip_and_print():
    budgets = Budgets(latency=parse_latency("20 ms"), params=parse_count("2.5M", "params"))
    assert budgets.to_dict() == {"latency": {"text": "20 ms", "value": 20.0, "unit": "ms"},
                                 "params": {"text": "2.5M", "value": 2.5e6, "unit": "parameters"}}
    assert Budgets.from_dict(budgets.to_dict()) == budgets
    assert budgets.text("; ") == "latency 20 ms; params 2.5M"


@pytest.mark.parametrize("ms, text, value", [(0.123456, "0.123ms", 0.123), (12.3456, "12.3ms", 12.3),
                                             (0.0009876, "0.000988ms", 0.000988), (150.0, "150ms", 150.0)])
def test_a_computed_latency_budget_keeps_three_digits_and_agrees_with_its_text(ms, text, value):
    budget = latency_budget(ms)
    assert budget.kind == "latency" and budget.text == text and budget.value == pytest.approx(value, rel=1e-12)
    assert parse_latency(budget.text).value == pytest.approx(budget.value, rel=1e-12)
    with pytest.raises(ConfigError, match="positive"):
        latency_budget(0.0)


# UPEM on two images, three classes: the anchor, and a candidate that moves the first image's mass
ANCHOR = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]])
CANDIDATE = torch.tensor([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])


def _kl(q, p):  # KL(q || p) of one row
    return sum(a * math.log(a / b) for a, b in zip(q, p))


EXPECTED = {  # each distance by hand; only the first image differs, so each mean is half of its value there
    "kl": _kl([0.5, 0.3, 0.2], [0.2, 0.7, 0.1]) / 2,  # KL(anchor || candidate), not the other way round
    "skl": (_kl([0.5, 0.3, 0.2], [0.2, 0.7, 0.1]) + _kl([0.2, 0.7, 0.1], [0.5, 0.3, 0.2])) / 2,
    "l1": (0.3 + 0.4 + 0.1) / 2,
    "disagree": 1 / 2,  # top-1 class 0 → 1 on the first image
}


def test_every_upem_distance_has_its_known_value():
    assert set(EXPECTED) == set(DISTANCES)
    assert _kl([0.5, 0.3, 0.2], [0.2, 0.7, 0.1]) != pytest.approx(_kl([0.2, 0.7, 0.1], [0.5, 0.3, 0.2]))
    for distance, expected in EXPECTED.items():
        assert upem(CANDIDATE, ANCHOR, distance) == pytest.approx(expected, rel=1e-5), distance
        assert upem(ANCHOR, ANCHOR, distance) == pytest.approx(0.0, abs=1e-9), distance


def test_every_upem_distance_orders_near_before_far():
    gen = torch.Generator().manual_seed(0)
    anchor = torch.softmax(torch.randn(200, 5, generator=gen) * 3, dim=1)
    other = torch.softmax(torch.randn(200, 5, generator=gen) * 3, dim=1)
    near, far = 0.9 * anchor + 0.1 * other, 0.2 * anchor + 0.8 * other
    for distance in DISTANCES:
        assert 0 < upem(near, anchor, distance) < upem(far, anchor, distance), distance
    with pytest.raises(ConfigError, match="unknown UPEM distance"):
        upem(ANCHOR, ANCHOR, "cosine")


@pytest.fixture
def space() -> WidthSpace:
    sites = (Site("a", 32), Site("b", 64), Site("c", 64), Site("d", 32))
    return WidthSpace("toy", sites, ratios=(0.25, 0.5, 0.75, 1.0))


def fake_latency(config) -> float:
    return 0.1 * config["a"] + 0.05 * config["b"] + 0.08 * config["c"] + 0.2 * config["d"]


def fake_upem(config) -> float:
    # wider is better, with site-specific value: lower is better, like UPEM
    return 10.0 - (0.03 * config["a"] + 0.02 * config["b"] + 0.05 * config["c"] + 0.04 * config["d"])


def brute_force(space, limit):
    best = None
    for values in itertools.product(*(space.choices[s] for s in space.site_names)):
        config = space.config(dict(zip(space.site_names, values)))
        if fake_latency(config) <= limit and (best is None or fake_upem(config) < fake_upem(best)):
            best = config
    return best


@pytest.mark.parametrize("limit", [6.0, 9.0, 12.0, 15.0])
def test_search_respects_the_budget_and_finds_the_known_optimum(space, limit):
    evaluated = []

    def fitness(config):
        evaluated.append(config)
        return fake_upem(config)

    result = evolutionary_search(space, fitness, [Constraint("latency_ms", fake_latency, limit)],
                                 SearchSettings(population=16, generations=12, seed=1))
    assert all(fake_latency(c) <= limit for c in evaluated)
    assert result.costs["latency_ms"] <= limit
    assert result.best == brute_force(space, limit)
    assert result.history == sorted(result.history, reverse=True)  # elitism: never gets worse


def test_several_constraints_at_once(space):
    params = Constraint("params", lambda c: c["b"] * c["c"], 2048)
    latency = Constraint("latency_ms", fake_latency, 14.0)
    result = evolutionary_search(space, fake_upem, [latency, params], SearchSettings(seed=3))
    assert result.best["b"] * result.best["c"] <= 2048 and fake_latency(result.best) <= 14.0


def test_infeasible_budget_stops_and_names_the_cheapest_reachable_cost(space):
    calls = []
    expected = r"latency_ms 1 asked, but the smallest sub-network \([0-9-]+\) needs 4\.48"
    with pytest.raises(InfeasibleBudget, match=expected):
        evolutionary_search(space, lambda c: calls.append(c) or 0.0,
                            [Constraint("latency_ms", fake_latency, 1.0)])
    assert not calls


def test_search_is_seeded(space):
    c = [Constraint("latency_ms", fake_latency, 10.0)]
    a = evolutionary_search(space, fake_upem, c, SearchSettings(seed=4, generations=3))
    b = evolutionary_search(space, fake_upem, c, SearchSettings(seed=4, generations=3))
    assert a.best == b.best and a.evaluated == b.evaluated
