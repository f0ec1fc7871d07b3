"""The registry of intra-model adaptation objectives (``L_dc``): one module per objective.

Adding an objective is one file with an ``Objective`` subclass decorated with ``@register``, plus its module
name in ``_MODULES`` below. ``create_objective(name, ...)`` builds one; ``objective_names()`` lists them.
"""

from __future__ import annotations

import importlib

from slimda.errors import ConfigError
from slimda.train.objectives.base import Objective

# Family modules, imported on first use (their @register calls fill the registry).
_MODULES = ("symnet", "confusion", "dann", "source_only")
_REGISTRY: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def objective_names() -> tuple[str, ...]:
    """Every registered objective: the built-in ones in ``_MODULES`` order, then any others as registered."""
    _load()
    modules = [f"{__name__}.{m}" for m in _MODULES]

    def rank(name: str) -> int:
        module = _REGISTRY[name].__module__
        return modules.index(module) if module in modules else len(modules)

    return tuple(sorted(_REGISTRY, key=rank))


def create_objective(name: str, feature_dim: int, feature_site: str, **weights: float) -> Objective:
    """A fresh objective ``name`` for features of ``feature_dim`` channels at width site ``feature_site``.

    ``weights``: ``confusion_weight``, ``soft_weight``, ``soft_temperature`` (see ``TrainConfig``).
    """
    _load()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown objective {name!r}; choose one of {', '.join(objective_names())}")
    return _REGISTRY[name](feature_dim, feature_site, **weights)


__all__ = ["Objective", "create_objective", "objective_names", "register"]
