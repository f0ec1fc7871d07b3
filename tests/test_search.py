"""Budget parsing and the evolutionary search, with small fake predictors."""

from __future__ import annotations

import itertools

import pytest

from slimda.select.budget import parse_count, parse_latency
from slimda.errors import ConfigError
from slimda.select.search import Constraint, InfeasibleBudget, SearchSettings, evolutionary_search
from slimda.model.space import Site, WidthSpace


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
