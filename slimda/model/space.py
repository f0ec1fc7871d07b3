"""Width spaces and width configurations.

A backbone declares *width sites*: named groups of channels whose count can change together (the stem,
each block's inner width, each stage's output width; channels tied by a residual add share one site).
A ``WidthSpace`` turns a ratio grid into the allowed channel counts per site; a ``WidthConfig`` picks one
count per site. Configurations have a stable, readable id (channel counts in site order) and round-trip
through JSON, so a LUT row, a log line and a manifest all name the same network.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from slimda.errors import ConfigError

DEFAULT_RATIOS: tuple[float, ...] = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)


@dataclass(frozen=True)
class Site:
    """A group of channels that is slimmed as one: ``max_channels`` at full width."""

    name: str
    max_channels: int


def round_channels(ratio: float, max_channels: int, multiple: int) -> int:
    """Channels for ``ratio`` of ``max_channels``, rounded to ``multiple`` (at least one multiple)."""
    if max_channels <= multiple:
        return max_channels
    count = int(math.floor(ratio * max_channels / multiple + 0.5)) * multiple
    return int(min(max_channels, max(multiple, count)))


def parse_ratios(text: str | Sequence[float]) -> tuple[float, ...]:
    """Ratios from ``"0.25,0.5,1"`` or ``"0.25:1:0.125"`` (start:stop:step) or a sequence; all in (0, 1]."""
    if isinstance(text, str):
        try:
            if ":" in text:
                start, stop, step = (float(v) for v in text.split(":"))
                if step <= 0:
                    raise ValueError
                count = int(round((stop - start) / step)) + 1
                values = [round(start + i * step, 6) for i in range(count)]
            else:
                values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(
                f"cannot read width ratios {text!r}: write them as '0.25,0.5,0.75,1' or 'start:stop:step' "
                "such as '0.25:1:0.125'"
            ) from None
    else:
        values = [float(v) for v in text]
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if not values or bad:
        raise ConfigError(f"width ratios must lie in (0, 1]; got {values}")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class WidthConfig:
    """One sub-network: a channel count for every site of a space (site order is the space's)."""

    arch: str
    widths: tuple[tuple[str, int], ...]

    @property
    def id(self) -> str:
        """Stable, readable id: the channel counts in site order, e.g. ``16-24-32-48``."""
        return "-".join(str(c) for _, c in self.widths)

    def __getitem__(self, site: str) -> int:
        for name, channels in self.widths:
            if name == site:
                return channels
        raise KeyError(site)

    def as_dict(self) -> dict[str, int]:
        return dict(self.widths)

    def to_json(self) -> str:
        return json.dumps({"arch": self.arch, "id": self.id, "widths": self.as_dict()})

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class WidthSpace:
    """The allowed channel counts per site of one backbone, from a ratio grid."""

    arch: str
    sites: tuple[Site, ...]
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    multiple: int = 8
    choices: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ratios = parse_ratios(self.ratios)
        object.__setattr__(self, "ratios", ratios)
        choices = {
            s.name: tuple(sorted({round_channels(r, s.max_channels, self.multiple) for r in ratios}))
            for s in self.sites
        }
        object.__setattr__(self, "choices", choices)

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    def config(self, widths: Mapping[str, int]) -> WidthConfig:
        """Validate a {site: channels} mapping; every site must be given a count from its choices."""
        missing = [s for s in self.site_names if s not in widths]
        unknown = [s for s in widths if s not in self.choices]
        if missing or unknown:
            raise ConfigError(
                f"width configuration for {self.arch} does not match its sites: "
                f"missing {missing or 'none'}, unknown {unknown or 'none'}; sites are {list(self.site_names)}"
            )
        for site in self.site_names:
            value = widths[site]
            if isinstance(value, bool) or not isinstance(value, int) or value not in self.choices[site]:
                raise ConfigError(
                    f"site {site!r} of {self.arch} cannot have {value!r} channels; "
                    f"allowed: {list(self.choices[site])}"
                )
        return WidthConfig(self.arch, tuple((s, int(widths[s])) for s in self.site_names))

    def uniform(self, ratio: float) -> WidthConfig:
        """Every site at ``ratio`` of its channels (rounded as the grid rounds)."""
        if not 0.0 < ratio <= 1.0:
            raise ConfigError(f"width ratio must lie in (0, 1]; got {ratio}")
        widths = {}
        for s in self.sites:
            target = round_channels(ratio, s.max_channels, self.multiple)
            widths[s.name] = min(self.choices[s.name], key=lambda c: (abs(c - target), c))
        return self.config(widths)

    def largest(self) -> WidthConfig:
        return self.config({s: c[-1] for s, c in self.choices.items()})

    def smallest(self) -> WidthConfig:
        return self.config({s: c[0] for s, c in self.choices.items()})

    def sample(self, rng: random.Random) -> WidthConfig:
        """A random configuration: each site drawn uniformly from its choices."""
        return self.config({s: rng.choice(c) for s, c in self.choices.items()})

    def sample_many(self, count: int, seed: int, exclude: Iterable[WidthConfig] = ()) -> list[WidthConfig]:
        """``count`` distinct random configurations (fewer only if the space is that small)."""
        rng = random.Random(seed)
        seen = {c.id for c in exclude}
        out: list[WidthConfig] = []
        for _ in range(count * 50):
            if len(out) == count:
                break
            c = self.sample(rng)
            if c.id not in seen:
                seen.add(c.id)
                out.append(c)
        return out

    def size(self) -> int:
        """Number of configurations in the space."""
        return math.prod(len(c) for c in self.choices.values())

    def from_id(self, config_id: str) -> WidthConfig:
        """Parse an id made by ``WidthConfig.id`` back into a configuration of this space."""
        return self.config(parse_config_id(self.arch, self.site_names, config_id, self.largest().id).as_dict())

    def from_json(self, text: str | Mapping) -> WidthConfig:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        if data.get("arch", self.arch) != self.arch:
            raise ConfigError(f"configuration is for {data.get('arch')!r}, not {self.arch!r}")
        if "widths" not in data:
            raise ConfigError("a configuration needs a 'widths' object mapping each site to its channels")
        return self.config(data["widths"])

    def ratio_of(self, config: WidthConfig) -> float:
        """Mean width ratio of a configuration (channels over max channels, averaged over sites)."""
        return sum(config[s.name] / s.max_channels for s in self.sites) / len(self.sites)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "sites": [[s.name, s.max_channels] for s in self.sites],
            "ratios": list(self.ratios),
            "multiple": self.multiple,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> WidthSpace:
        return cls(
            arch=data["arch"],
            sites=tuple(Site(n, int(m)) for n, m in data["sites"]),
            ratios=tuple(data["ratios"]),
            multiple=int(data["multiple"]),
        )


def parse_config_id(arch: str, sites: Sequence[str], config_id: str, example: str | None = None) -> WidthConfig:
    """The configuration an id names (``"8-16-16"``: one channel count per site, in site order).

    Checks the id's shape only; ``WidthSpace.from_id`` also checks each count against the space's choices.
    """
    parts = config_id.strip().split("-")
    if len(parts) != len(sites) or not all(p.isdigit() for p in parts):
        like = f", like {example!r}" if example else ""
        raise ConfigError(f"{config_id!r} is not a configuration id of {arch}: expected {len(sites)} channel "
                          f"counts joined by '-'{like}")
    return WidthConfig(arch, tuple(zip(sites, (int(p) for p in parts))))
