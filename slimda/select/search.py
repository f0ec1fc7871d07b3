"""Budget-aware evolutionary search over a width space (once-for-all style).

The search is handed its predictors: a fitness to minimise (UPEM on target images in deployment) and one
cost predictor per constraint (latency from a device's lookup table, FLOPs, parameters). It only ever
keeps feasible candidates, caches every evaluation, and gives up with the cheapest reachable cost when no
configuration fits, instead of sampling forever.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from slimda.errors import SlimdaError
from slimda.model.space import WidthConfig, WidthSpace


@dataclass(frozen=True)
class Constraint:
    name: str  # what messages call it, e.g. "latency", "FLOPs", "parameters"
    predict: Callable[[WidthConfig], float]
    limit: float
    unit: str = ""  # printed after values in messages, e.g. " ms"

    def allows(self, config: WidthConfig) -> bool:
        return self.predict(config) <= self.limit


class InfeasibleBudget(SlimdaError):
    """No configuration of the space meets the constraints."""


@dataclass
class SearchResult:
    best: WidthConfig
    fitness: float
    costs: dict[str, float]
    evaluated: dict[str, float] = field(default_factory=dict)  # config id -> fitness
    history: list[float] = field(default_factory=list)  # best fitness per generation


@dataclass(frozen=True)
class SearchSettings:
    population: int = 24
    generations: int = 8
    parents: int = 8
    mutation_prob: float = 0.25
    mutations: int = 8  # children by mutation per generation
    crossovers: int = 8  # children by crossover per generation
    max_tries: int = 50  # attempts to draw one feasible child before giving up on it
    seed: int = 0


def feasible(config: WidthConfig, constraints: Sequence[Constraint]) -> bool:
    return all(c.allows(config) for c in constraints)


def _check_reachable(space: WidthSpace, constraints: Sequence[Constraint]) -> None:
    """Raise with the cheapest reachable cost when even the smallest configuration is over budget."""
    smallest = space.smallest()
    if feasible(smallest, constraints):
        return
    over = [c for c in constraints if not c.allows(smallest)]
    parts = [f"{c.name} {_number(c.limit)}{c.unit} asked, but the smallest sub-network ({smallest.id}) needs "
             f"{_number(c.predict(smallest))}{c.unit}" for c in over]
    raise InfeasibleBudget("no sub-network of the bank meets the budget: " + "; ".join(parts)
                           + ". Raise the budget, or train a bank with smaller widths (--widths).")


def _number(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def evolutionary_search(
    space: WidthSpace,
    fitness: Callable[[WidthConfig], float],
    constraints: Sequence[Constraint],
    settings: SearchSettings = SearchSettings(),
    progress: Callable[[int], None] | None = None,
) -> SearchResult:
    """Minimise ``fitness`` over configurations that satisfy every constraint.

    The first population holds the smallest configuration, every uniform width that fits and random
    feasible samples; each generation keeps the best ``parents`` and adds mutated and crossed-over
    children. ``progress(n)`` is called with the number of new fitness evaluations.
    """
    _check_reachable(space, constraints)
    rng = random.Random(settings.seed)
    scores: dict[str, float] = {}
    by_id: dict[str, WidthConfig] = {}

    def score(config: WidthConfig) -> float:
        if config.id not in scores:
            scores[config.id] = float(fitness(config))
            by_id[config.id] = config
            if progress:
                progress(1)
        return scores[config.id]

    def draw(make: Callable[[], WidthConfig]) -> WidthConfig | None:
        for _ in range(settings.max_tries):
            candidate = make()
            if feasible(candidate, constraints):
                return candidate
        return None

    seeds = [space.smallest()] + [space.uniform(r) for r in space.ratios]
    population = {c.id: c for c in seeds if feasible(c, constraints)}
    for _ in range(settings.population * settings.max_tries):
        if len(population) >= settings.population:
            break
        c = space.sample(rng)
        if feasible(c, constraints):
            population[c.id] = c
    history = []
    for _ in range(settings.generations):
        ranked = sorted(population.values(), key=score)
        history.append(score(ranked[0]))
        parents = ranked[: settings.parents]
        children: dict[str, WidthConfig] = {c.id: c for c in parents}
        for _ in range(settings.mutations):
            parent = rng.choice(parents)
            child = draw(lambda p=parent: _mutate(space, p, settings.mutation_prob, rng))
            if child is not None:
                children.setdefault(child.id, child)
        for _ in range(settings.crossovers):
            a, b = rng.choice(parents), rng.choice(parents)
            child = draw(lambda a=a, b=b: _crossover(space, a, b, rng))
            if child is not None:
                children.setdefault(child.id, child)
        population = children
    ranked = sorted(population.values(), key=score)
    history.append(score(ranked[0]))
    best = ranked[0]
    return SearchResult(best, scores[best.id], {c.name: c.predict(best) for c in constraints},
                        dict(scores), history)


def _mutate(space: WidthSpace, parent: WidthConfig, prob: float, rng: random.Random) -> WidthConfig:
    widths = parent.as_dict()
    for site, choices in space.choices.items():
        if rng.random() < prob:
            widths[site] = rng.choice(choices)
    return space.config(widths)


def _crossover(space: WidthSpace, a: WidthConfig, b: WidthConfig, rng: random.Random) -> WidthConfig:
    wa, wb = a.as_dict(), b.as_dict()
    return space.config({s: (wa if rng.random() < 0.5 else wb)[s] for s in space.site_names})
