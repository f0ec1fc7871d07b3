import json
import random

import pytest

from slimda.errors import ConfigError
from slimda.model.space import Site, WidthSpace, parse_ratios, round_channels


@pytest.fixture
def space() -> WidthSpace:
    return WidthSpace("toy", (Site("stem", 16), Site("mid", 64), Site("out", 128)), multiple=8)


def test_rounding_respects_multiple_and_bounds():
    assert round_channels(0.25, 64, 8) == 16
    assert round_channels(0.01, 64, 8) == 8  # never below one multiple
    assert round_channels(1.0, 64, 8) == 64
    assert round_channels(0.5, 6, 8) == 6  # sites smaller than the multiple stay whole


def test_choices_are_sorted_unique_and_end_at_max(space):
    for site in space.sites:
        choices = space.choices[site.name]
        assert list(choices) == sorted(set(choices))
        assert choices[-1] == site.max_channels
        assert all(c % 8 == 0 for c in choices)


def test_id_and_json_round_trip(space):
    for config in [space.largest(), space.smallest(), *space.sample_many(10, seed=1)]:
        assert space.from_id(config.id) == config
        assert space.from_json(config.to_json()) == config
        assert json.loads(config.to_json())["id"] == config.id
    assert space.largest().id == "16-64-128"


def test_sampling_is_seeded_and_distinct(space):
    a = space.sample_many(8, seed=3)
    b = space.sample_many(8, seed=3)
    assert a == b and len({c.id for c in a}) == 8
    assert space.sample(random.Random(5)) == space.sample(random.Random(5))


def test_uniform_widths_grow(space):
    flops_like = [sum(c for _, c in space.uniform(r).widths) for r in (0.25, 0.5, 0.75, 1.0)]
    assert flops_like == sorted(flops_like) and len(set(flops_like)) == 4
    assert space.uniform(1.0) == space.largest()


@pytest.mark.parametrize(
    "widths, message",
    [
        ({"stem": 16, "mid": 64}, "missing \\['out'\\]"),
        ({"stem": 16, "mid": 64, "out": 128, "extra": 8}, "unknown \\['extra'\\]"),
        ({"stem": 16, "mid": 60, "out": 128}, "site 'mid' of toy cannot have 60 channels"),
        ({"stem": 16, "mid": 64, "out": 256}, "cannot have 256 channels"),
    ],
)
def test_invalid_configurations_are_rejected(space, widths, message):
    with pytest.raises(ConfigError, match=message):
        space.config(widths)


def test_bad_ids_and_ratios(space):
    with pytest.raises(ConfigError, match="not a configuration id of toy"):
        space.from_id("16-64")
    with pytest.raises(ConfigError, match="must lie in \\(0, 1\\]"):
        parse_ratios("0,0.5,1")
    with pytest.raises(ConfigError, match="must lie in \\(0, 1\\]"):
        parse_ratios("0.5,1.5")
    with pytest.raises(ConfigError, match="cannot read width ratios"):
        parse_ratios("a,b")
    assert parse_ratios("0.25:1:0.25") == (0.25, 0.5, 0.75, 1.0)
    with pytest.raises(ConfigError, match="width ratio must lie"):
        space.uniform(0)
