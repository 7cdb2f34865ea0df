"""The audit's configuration (frozen). Every field says why it has its default."""

from __future__ import annotations

import dataclasses
from typing import Any

from rcig_release.errors import InputError

ATTACKS = ("loss", "shadow", "lira_online", "lira_offline", "rmia", "nearest")
BASELINES = ("naive", "full_data")


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    shadows: int = (
        16  # K shadow pipelines (two folds of K/2 in the game; LiRA: shared variance below 64)
    )
    targets: int = (
        4  # networks trained on the release (and per shadow pipeline, so variances match)
    )
    records: int = 500  # up to this many members and as many non-members (balanced)
    population: int = 1000  # held-out images (not audit records) used as RMIA's z samples
    attacks: tuple[str, ...] = ATTACKS
    baselines: tuple[str, ...] = BASELINES  # naive release; a network trained on the full split
    seed: int = 0  # record sampling, keep matrix, shadow seeds, network keys
    mirror: bool = True  # query each record and its mirror image (LiRA Table III: most of the gain)
    rmia_a: float | None = None  # RMIA offline a; None: tuned on the shadows (ml_privacy_meter)
    rmia_gamma: float = 1.0  # RMIA's γ (its documented default)
    arch: str = "convnet"  # downstream architecture (the evaluate protocol's default)
    width: int | None = None  # None: the run's distillation width (a CPU-sized network)
    train_steps: int | None = (
        None  # None: the evaluate protocol's U (1000 for ≤ 10 images, else 2000)
    )
    lr: float = 1e-4  # evaluate protocol
    warmup: int = 500  # evaluate protocol
    batch: int = 256  # evaluate protocol
    full_models: int = 1  # networks per full-data baseline pipeline (a released model is one network; LiRA's setup)
    # The full-data baseline's recipe: ordinary supervised training (cross-entropy, Adam, warm-up
    # then cosine). The evaluate protocol (lr 1e-4, 2000 steps) is made for 10-500 images and
    # under-fits a full split; on digits 300 steps at 2e-3 fit the training split better in a
    # seventh of the time (docs/benchmarks.md), and a better-fit model is the more honest baseline.
    full_steps: int = 300
    full_lr: float = 2e-3
    full_warmup: int = 50
    shadow_group: int | None = (
        None  # pipelines whose networks train in one vmapped call; None: 1 on CPU, else by memory
    )
    shadow_lrs: str = "run"  # "run": shadows start from the run's tuned inner/HVP lrs (no re-tuning); "tune": each shadow tunes as the run did
    copy_percentile: float = 1.0  # near-copy threshold: this percentile of train NN distances
    delta: float = (
        1e-8  # δ of the game's ε bounds (one-run adds ≈ 2·m·δ·c to its p-value: docs/audit.md)
    )
    epsilon_alpha: float = 0.01  # the game's ε bounds hold jointly with probability 1 − this

    def replace(self, **changes: Any) -> AuditConfig:
        return dataclasses.replace(self, **changes)


def validate(cfg: AuditConfig) -> None:
    if cfg.shadows < 2 or cfg.shadows % 2:
        raise InputError(f"--shadows must be an even number >= 2 (got {cfg.shadows})")
    if cfg.targets < 1:
        raise InputError(f"--targets must be at least 1 (got {cfg.targets})")
    if cfg.full_models < 1:
        raise InputError(f"full_models must be at least 1 (got {cfg.full_models})")
    if cfg.full_steps < 1 or cfg.full_lr <= 0 or cfg.full_warmup < 0:
        raise InputError("full_steps must be >= 1, full_lr > 0 and full_warmup >= 0")
    if cfg.records < 2:
        raise InputError(f"--records must be at least 2 (got {cfg.records})")
    unknown = [a for a in cfg.attacks if a not in ATTACKS]
    if unknown or not cfg.attacks:
        raise InputError(
            f"unknown attack {unknown[0] if unknown else '(none)'}; choose from "
            f"{', '.join(ATTACKS)}"
        )
    bad = [b for b in cfg.baselines if b not in BASELINES]
    if bad:
        raise InputError(f"unknown baseline {bad[0]}; choose from {', '.join(BASELINES)}")
    if cfg.shadow_lrs not in ("run", "tune"):
        raise InputError(f"shadow_lrs must be 'run' or 'tune' (got {cfg.shadow_lrs!r})")
    if not 0.0 < cfg.delta < 1.0 or not 0.0 < cfg.epsilon_alpha < 0.5:
        raise InputError("delta must lie in (0, 1) and epsilon_alpha in (0, 0.5)")
    if cfg.rmia_a is not None and not 0.0 <= cfg.rmia_a <= 1.0:
        raise InputError("rmia_a must lie in [0, 1]")


def to_dict(cfg: AuditConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["attacks"], d["baselines"] = list(cfg.attacks), list(cfg.baselines)
    return d
