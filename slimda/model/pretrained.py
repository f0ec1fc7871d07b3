"""Starting a bank from weights brought as a file (``slimda-train --init FILE``).

Two kinds of file start a run:

- a torchvision state dict (``torch.save(model.state_dict(), "resnet50.pth")``, with or without its
  classifier) for a backbone with torchvision's parameter names: at full width the bank then computes exactly
  the loaded network's features, and every sub-network takes the leading channels;
- a ``bank.pt`` written by an earlier slimda-train run: the whole bank (backbone and heads) is re-adapted to
  a new target domain with the same classes.

Files are read with ``torch.load(weights_only=True)``, whose unpickler builds tensors and plain containers
only: a pickle that would run code is refused before anything in it runs. Nothing is loaded partially
without being said: a key that does not fit stops the run with the first such keys named.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from slimda.errors import ConfigError
from slimda.model.fit import check_fit
from slimda.tables import sha256_file

_WRAPPER_KEYS = ("state_dict", "model")  # checkpoints that nest the state dict one level down
_SHOWN = 5  # keys named in a message


@dataclass(frozen=True)
class InitRecord:
    """What ``--init`` loaded, as ``config.json`` records it."""

    path: str
    sha256: str
    kind: str  # "torchvision" or "bank"
    loaded_tensors: int
    skipped: tuple[str, ...]  # keys of the file deliberately not loaded (torchvision's classifier)

    def to_dict(self) -> dict[str, object]:
        return {"init": self.path, "init_sha256": self.sha256, "init_kind": self.kind,
                "init_loaded_tensors": self.loaded_tensors, "init_skipped_keys": list(self.skipped)}


def read_weights_file(path: str | os.PathLike) -> dict:
    """The file's top-level dict, read without executing pickled code; a ``ConfigError`` says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--init file {path} does not exist" if not path.exists() else
                          f"--init {path} is a folder: pass a .pth state dict or a run's bank.pt")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln]
        if lines:  # a class or function the file would call: code, not weights
            why = re.sub(r"\x1b\[[0-9;]*m", "", lines[0])
            raise ConfigError(
                f"refused to load {path}: it holds pickled objects other than tensors, which could run code when "
                f"loaded ({why}). Nothing in it was run. slimda loads weights only: save them with "
                f"torch.save(model.state_dict(), FILE).") from None
        raise ConfigError(f"cannot read {path} as PyTorch weights ({err}). Pass a file written by "
                          f"torch.save(model.state_dict(), FILE) or a run's bank.pt.") from None
    except Exception as err:  # noqa: BLE001 - any reading failure means "not a weights file"
        raise ConfigError(f"cannot read {path} as PyTorch weights ({type(err).__name__}: {err}). Pass a file "
                          f"written by torch.save(model.state_dict(), FILE) or a run's bank.pt.") from None
    if not isinstance(payload, dict):
        raise ConfigError(f"{path} holds a {type(payload).__name__}, not a state dict: save the model's weights "
                          f"with torch.save(model.state_dict(), FILE)")
    return payload


def tensor_state_dict(payload: Mapping, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict inside ``payload`` (itself, or under 'state_dict'/'model'); DDP's 'module.' is stripped."""
    for key in _WRAPPER_KEYS:
        inner = payload.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            payload = inner
            break
    not_tensors = [k for k, v in payload.items() if not isinstance(v, torch.Tensor)]
    if not payload or not_tensors:
        raise ConfigError(f"{path} is not a state dict of tensors (e.g. {not_tensors[:_SHOWN]} are not tensors): "
                          f"save the model's weights with torch.save(model.state_dict(), FILE)")
    keys = list(payload)
    if all(k.startswith("module.") for k in keys):  # saved from a DistributedDataParallel wrapper
        payload = {k[len("module."):]: v for k, v in payload.items()}
    return dict(payload)


def load_init(bank: torch.nn.Module, path: str | os.PathLike, class_names: tuple[str, ...] | list[str],
              channels: int) -> InitRecord:
    """Load ``path`` into ``bank`` (a ``ModelBank`` at full width): a torchvision state dict into its backbone,
    or a slimda ``bank.pt`` into backbone and heads. Returns what was loaded, for ``config.json``."""
    from slimda.model.bank import BANK_FORMAT, BankMeta

    payload = read_weights_file(path)
    sha = sha256_file(path)
    if payload.get("format") == BANK_FORMAT:
        desc = payload.get("bank") or {}
        meta = BankMeta.from_dict(payload.get("metadata") or {}, where=f"{path}'s metadata")
        if desc.get("arch") != bank.arch:
            raise ConfigError(f"{path} is a {desc.get('arch')} bank; this run trains {bank.arch}: "
                              f"pass --arch {desc.get('arch')} or another --init file")
        if list(meta.class_names) != list(class_names):
            raise ConfigError(f"{path} was trained on classes {list(meta.class_names)[:8]}..., this run's source has "
                              f"{list(class_names)[:8]}...: re-adapting a bank needs the same classes")
        if meta.preprocessing.channels != channels:
            raise ConfigError(f"{path} takes {meta.preprocessing.channels}-channel images, this run's data has "
                              f"{channels}: the first convolution would not fit")
        state = tensor_state_dict(payload["state_dict"], path)
        check_fit(bank, state, f"a {bank.arch} bank with {len(class_names)} classes", path)
        bank.load_state_dict(state)
        return InitRecord(str(Path(path).resolve()), sha, "bank", len(state), ())
    if bank.backbone.torchvision_classifier_prefix is None:
        raise ConfigError(f"{bank.arch} has no torchvision counterpart: --init takes a bank.pt from an earlier "
                          f"{bank.arch} run for it")
    state = tensor_state_dict(payload, path)
    skipped = bank.backbone.load_torchvision_state_dict(state, str(path))
    return InitRecord(str(Path(path).resolve()), sha, "torchvision", len(state) - len(skipped), skipped)
