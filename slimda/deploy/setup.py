"""Opening a trained bank for deployment or reports: the bank and its run folder, the target images that
score its sub-networks, and the ``Deployer`` wired from them. slimda deploy, bench and quickstart share it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from slimda.deploy.deployer import Deployer, DeployOptions
from slimda.model.bank import BankMeta, ModelBank, load_bank
from slimda.select.evaluate import (
    DEFAULT_SELECT_BY,
    TargetImages,
    TargetScorer,
    load_run_source_val,
    load_source_val,
    load_target_images,
)
from slimda.select.upem import DEFAULT_DISTANCE


@dataclass(frozen=True)
class TargetScoring:
    """Which target images score sub-networks (UPEM; accuracy too when labelled), and how."""

    target: str  # a built-in domain name or a folder of images
    head: str | None = None  # test-time head scored and exported; None: the bank's own
    distance: str = DEFAULT_DISTANCE
    calibration_images: int = 512  # recalibrate BatchNorm
    score_images: int = 1024  # UPEM (and accuracy) are computed on these; 0 = all
    seed: int = 0  # chooses the images
    workers: int | None = None  # loader processes reading them (None: from the core count)
    threads: int | None = None  # torch's CPU threads while scoring (None: half the cores)
    device: str = "auto"  # where sub-networks are scored (auto: a CUDA GPU when there is one)
    amp: str = "auto"  # autocast while scoring (auto: bf16 on a GPU, off on the CPU)
    layout: str = "auto"  # memory layout while scoring (auto: channels-last on a GPU, nchw on the CPU)
    source_val: str | None = None  # labelled source images the bank never saw; None: the run's own split, if any
    source_val_images: int = 2000  # of them, at random (0: all)
    select_by: str = DEFAULT_SELECT_BY  # what the search minimises: upem, upem-ensemble or -estimate


@dataclass(frozen=True)
class BankRun:
    """A trained bank and where it lives: ``run_dir`` holds its latency tables and default outputs."""

    bank: ModelBank
    meta: BankMeta
    run_dir: Path
    bank_file: Path

    @classmethod
    def open(cls, path: str | os.PathLike) -> BankRun:
        """A run directory written by slimda-train, or its ``bank.pt``."""
        path = Path(path)
        bank, meta = load_bank(path)
        run_dir = path if path.is_dir() else path.parent
        return cls(bank, meta, run_dir, run_dir / "bank.pt" if path.is_dir() else path)

    def scorer(self, scoring: TargetScoring) -> TargetScorer:
        """The target images loaded and preprocessed as the bank was trained, ready to score sub-networks."""
        from slimda.data.loading import use_threads
        from slimda.data.preprocessing import PHOTO_MIN_SIDE
        from slimda.model.compute import resolve_compute

        compute = resolve_compute(scoring.device, scoring.amp, scoring.layout)  # a wrong option fails first
        use_threads(scoring.threads, "--score-threads")
        target = load_target_images(scoring.target, self.meta, scoring.calibration_images, scoring.score_images,
                                    seed=scoring.seed, workers=scoring.workers)
        scorer = TargetScorer(self.bank, target, scoring.head or self.meta.test_head, scoring.distance, compute,
                              self.source_val(scoring), scoring.select_by)
        from slimda.console import say

        if scorer.no_estimate:
            say(f"no estimate of target accuracy: {scorer.no_estimate}")
        if compute.device.type != "cpu":
            kept = "kept on the GPU" if scorer.images_on_device else "copied to the GPU per batch (too large to keep)"
            say(f"scoring sub-networks on {compute.label}; target images {kept}")
        elif compute.amp is None and min(self.meta.preprocessing.size) >= PHOTO_MIN_SIDE:
            say("scoring photo-sized sub-networks on the CPU in fp32 can take a minute per candidate (a ResNet-50 "
                "at 224x224 on 2 cores): --score-amp bf16 --score-layout channels-last scores several times faster "
                "(on CPUs with bf16 instructions), and fewer --calibration-images/--score-images and a smaller "
                "--population shorten the search (benchmarks/deploy_scale.py measures both)")
        return scorer

    def source_val(self, scoring: TargetScoring) -> TargetImages | None:
        """Labelled source images the bank never trained on: ``--source-val DATA``, else the run's own split."""
        if scoring.source_val:
            return load_source_val(scoring.source_val, self.meta, scoring.source_val_images, scoring.seed,
                                   scoring.workers)
        return load_run_source_val(self.run_dir, self.meta, scoring.source_val_images, scoring.seed, scoring.workers)

    def deployer(self, scorer: TargetScorer, options: DeployOptions, out: str | os.PathLike | None = None) -> Deployer:
        """A ``Deployer`` of this bank scored by ``scorer``, writing to ``out`` (default RUN/deploy)."""
        out_dir = Path(out) if out is not None else self.run_dir / "deploy"
        return Deployer(self.bank, self.meta, self.run_dir, scorer, out_dir, options, self.bank_file)


def open_deployer(bank: str | os.PathLike, scoring: TargetScoring, options: DeployOptions,
                  out: str | os.PathLike | None = None) -> Deployer:
    """Load the bank (run directory or bank.pt) and the target images, and wire a ``Deployer`` from them."""
    run = BankRun.open(bank)
    return run.deployer(run.scorer(scoring), options, out)
