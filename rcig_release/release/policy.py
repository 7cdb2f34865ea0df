"""Release policies: a frozen schema, loaded from TOML with every key checked.

A policy is a set of rules over the audit's membership game (docs/audit.md, "The game"): every
attack that beats chance significantly refuses, at a family-wise false-refusal rate ``gate.alpha``
for a release whose attacks are at chance; each such rule must also be *decidable* at the audit's
sizes (power ≥ ``gate.power`` to detect an attack at the policy's ``detect_*`` effect sizes), or it
fails closed. Besides: limits on the game's ε lower bounds, the audit's strength (attacks run,
shadows), the initialisation, utility, and (optional ``[dp]``) the run's proven
differential-privacy guarantee. The file's keys and types are the pydantic schema ``PolicyFile``
(unknown keys forbidden, strict types; rcig_release/schema.py words its errors); ranges, NaN and
the names a list may hold are checked after it. Each problem is one ``InputError`` line naming the
key; a misspelt key reads "unknown key" with the closest known key: a typo in a privacy policy must
never silently loosen it. The meaning of each key is in docs/release.md."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, create_model

from rcig_release import schema
from rcig_release.errors import InputError
from rcig_release.schema import STRICT

ATTACK_NAMES = ("loss", "shadow", "lira_online", "lira_offline", "rmia", "nearest")
# Attacks a policy may name in [limits.attack.*]: the six above plus the audit's feature-space
# variant of the release-direct attack.
LIMITABLE_ATTACKS = ATTACK_NAMES + ("nearest_feature",)
INIT_MODES = ("real", "noise", "mean", "centroids", "dp-mean")
METRIC_KEYS = (
    "detect_auc",
    "detect_tpr_at_fpr_0_01",
    "detect_tpr_at_fpr_0_001",
    "max_epsilon_lower_bound",
)
# Keys of the earlier schema (point limits on the custodian's fixed split), named in the error.
_RENAMED = {
    "max_auc": "detect_auc",
    "max_tpr_at_fpr_0_01": "detect_tpr_at_fpr_0_01",
    "max_tpr_at_fpr_0_001": "detect_tpr_at_fpr_0_001",
    "bound": None,
    "unresolved": None,
    "max_near_copies": None,
}


# sha256 of the policy files shipped in rcig_release/policies/ (package data; tests/
# test_release_policy.py keeps them equal): a file that calls itself one of these names but differs
# is reported as modified.
SHIPPED_SHA256 = {
    "default": "3cce3cbbaaee8d81e3cab045651ee075a919cc51b90911491396199ea2e1481e",
    "strict": "97f72b00fc7d52fe323751ae978018af9406e0ba6f566c16c39bdecbcd7446f5",
    "dp": "9c71f85f8e90557329351175b3b55a819129d264f916f5a1c77a10ccef9fdd21",
    "demo": "b2afa69f8925e4ce5f5c71ff9c121c18a2d4cd41c903fd9402bb5146a52a73a0",
}


@dataclasses.dataclass(frozen=True)
class MetricLimits:
    """Effect sizes the audit must be able to detect, and the ε limit. ``None`` = rule not applied
    (in groups and per-attack overrides: inherit / off)."""

    detect_auc: float | None
    detect_tpr_at_fpr_0_01: float | None
    detect_tpr_at_fpr_0_001: float | None
    max_epsilon_lower_bound: float | None

    def merged(self, override: MetricLimits | None) -> MetricLimits:
        if override is None:
            return self
        return MetricLimits(
            **{
                k: (getattr(override, k) if getattr(override, k) is not None else getattr(self, k))
                for k in METRIC_KEYS
            }
        )


@dataclasses.dataclass(frozen=True)
class GroupLimits:
    patterns: tuple[str, ...]  # fnmatch patterns over the game's group names (not "all")
    limits: MetricLimits


@dataclasses.dataclass(frozen=True)
class Policy:
    name: str
    description: str
    required_attacks: tuple[str, ...]
    min_shadows: int
    alpha: float  # family-wise false-refusal rate of a release whose attacks are at chance
    power: float  # each test rule must detect its effect size with this probability
    overall: MetricLimits
    per_attack: Mapping[str, MetricLimits]
    groups: GroupLimits
    allow_near_copies_in_bundle: bool
    allowed_init_modes: tuple[str, ...]
    min_accuracy: float
    min_gain_over_naive: float | None
    sha256: str  # of the policy file's bytes
    source_name: str  # the policy file's base name (never a path)
    dp_max_epsilon: float | None = (
        None  # [dp] max_epsilon: the run must be DP with proven ε <= this
    )
    dp_max_delta: float | None = None  # [dp] max_delta (optional): and its δ <= this
    # [release] require_replay (optional): release needs --replay (docs/release.md, "Binding")
    require_replay: bool = False
    # [policy] demonstration (optional): a demonstration at reduced sizes, not a privacy audit; the
    # card, verdict and Croissant file say so and drop the `privacy-audited` tag
    demonstration: bool = False

    @property
    def modified(self) -> bool:
        """A file named like a shipped policy whose bytes differ from it."""
        return self.name in SHIPPED_SHA256 and self.sha256 != SHIPPED_SHA256[self.name]

    @property
    def label(self) -> str:
        """How verdicts, cards and the CLI name the policy: a modified shipped policy says so."""
        if self.modified:
            return (
                f"{self.name} (modified: sha256 {self.sha256[:12]}… is not the shipped "
                f"{self.name}.toml)"
            )
        return self.name


# ---- the file's schema (pydantic; rcig_release/schema.py turns its errors into one line) -------
# Structure and types only: unknown keys, missing keys and wrong types are refused here; ranges,
# NaN and the names a list may hold are checked by parse_policy, with the key named.

Off = Literal[False]  # `key = false`: the rule is explicitly not applied


class _Meta(BaseModel):
    model_config = STRICT
    name: str
    description: str = ""
    demonstration: bool = False


class _Audit(BaseModel):
    model_config = STRICT
    required_attacks: list[str]
    min_shadows: int


class _Gate(BaseModel):
    model_config = STRICT
    alpha: float
    power: float


class _AttackMetrics(BaseModel):
    """A per-attack override: an absent key is the overall limit (``false`` is no value here)."""

    model_config = STRICT
    detect_auc: float | None = None
    detect_tpr_at_fpr_0_01: float | None = None
    detect_tpr_at_fpr_0_001: float | None = None
    max_epsilon_lower_bound: float | None = None


class _Groups(BaseModel):
    """Rules for the risk groups: an absent key (or ``false``) is not applied to groups."""

    model_config = STRICT
    patterns: list[str]
    detect_auc: float | Off | None = None
    detect_tpr_at_fpr_0_01: float | Off | None = None
    detect_tpr_at_fpr_0_001: float | Off | None = None
    max_epsilon_lower_bound: float | Off | None = None


# [limits.attack.NAME]: one optional table per limitable attack
_Attacks: type[BaseModel] = create_model(
    "_Attacks",
    __config__=STRICT,
    **{name: (_AttackMetrics | None, None) for name in LIMITABLE_ATTACKS},  # type: ignore[call-overload]
)


class _Limits(BaseModel):
    model_config = STRICT
    detect_auc: float | Off
    detect_tpr_at_fpr_0_01: float | Off
    detect_tpr_at_fpr_0_001: float | Off
    max_epsilon_lower_bound: float | Off
    groups: _Groups
    attack: _Attacks | None = None  # type: ignore[valid-type]


class _Copies(BaseModel):
    model_config = STRICT
    allow_near_copies_in_bundle: bool


class _Init(BaseModel):
    model_config = STRICT
    allowed_modes: list[str]


class _Utility(BaseModel):
    model_config = STRICT
    min_accuracy: float
    min_gain_over_naive: float | None = None


class _Dp(BaseModel):
    model_config = STRICT
    max_epsilon: float
    max_delta: float | None = None


class _Release(BaseModel):
    model_config = STRICT
    require_replay: bool


class PolicyFile(BaseModel):
    """A release policy file's keys and their types (docs/release.md, "Policy files")."""

    model_config = STRICT
    policy: _Meta
    audit: _Audit
    gate: _Gate
    limits: _Limits
    copies: _Copies
    init: _Init
    utility: _Utility
    dp: _Dp | None = None
    release: _Release | None = None


def _unknown_key(raw: Mapping[str, Any]) -> Callable[[schema.Path], str | None]:
    """How an unknown key is worded when the closest known key is not the whole story: an unknown
    attack, and the keys of the earlier schema (point limits on a fixed split)."""

    def explain(path: schema.Path) -> str | None:
        key = schema.dotted(path)
        if path[:2] == ("limits", "attack") and len(path) == 3:
            return f"unknown attack {key} (known: {', '.join(LIMITABLE_ATTACKS)})"
        last = path[-1]
        if not isinstance(last, str) or last not in _RENAMED:
            return None
        new = _RENAMED[last]
        table = raw.get("limits") if path[:-1] == ("limits",) else None
        if new and isinstance(table, Mapping) and new not in table:  # a required key, renamed
            return (
                f"missing key limits.{new} ({key} is the earlier schema's key: see docs/release.md)"
            )
        if new:
            return f"unknown key {key} (the gate now tests the audit's game: use {new}, see docs/release.md)"
        return f"unknown key {key} (no longer used: see docs/release.md)"

    return explain


def _number(
    value: float | None, key: str, file: str, *, lo: float = 0.0, hi: float | None = None
) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"policy {file}: {key} must be a finite number")
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise InputError(f"policy {file}: {key} must be in {rng}")
    return value


def _metric_limits(table: BaseModel, where: str, file: str) -> MetricLimits:
    def above(key: str, floor: float) -> float | None:
        value = getattr(table, key)
        v = None if value is False else _number(value, f"{where}.{key}", file, hi=1.0)
        if v is not None and v <= floor:
            raise InputError(f"policy {file}: {where}.{key} must be above {floor:g} (chance)")
        return v

    eps = table.max_epsilon_lower_bound  # type: ignore[attr-defined]
    return MetricLimits(
        detect_auc=above("detect_auc", 0.5),
        detect_tpr_at_fpr_0_01=above("detect_tpr_at_fpr_0_01", 0.01),
        detect_tpr_at_fpr_0_001=above("detect_tpr_at_fpr_0_001", 0.001),
        max_epsilon_lower_bound=None
        if eps is False
        else _number(eps, f"{where}.max_epsilon_lower_bound", file, hi=50.0),
    )


def _names(values: list[str], key: str, file: str, options: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in values if v not in options]
    if bad:
        raise InputError(
            f"policy {file}: {key} has unknown value {bad[0]!r} (known: {', '.join(options)})"
        )
    return tuple(values)


def parse_policy(text: bytes, file: str = "<policy>") -> Policy:
    """Parses and validates a policy from the TOML file's bytes."""
    # depth, integer length and syntax: one line each (safeio), never a RecursionError
    from rcig_release.safeio import loads_toml  # (NumPy: not at the CLI's import)

    raw = loads_toml(text, f"policy {file}")
    doc = schema.validate(PolicyFile, raw, f"policy {file}", _unknown_key(raw))

    name = doc.policy.name
    if not name.strip() or any(ord(ch) < 32 for ch in name):
        raise InputError(f"policy {file}: policy.name must be a non-empty single line")

    required = _names(doc.audit.required_attacks, "audit.required_attacks", file, ATTACK_NAMES)
    if not required:
        raise InputError(f"policy {file}: audit.required_attacks must name at least one attack")
    if doc.audit.min_shadows < 2:
        raise InputError(
            f"policy {file}: audit.min_shadows must be >= 2 (the game needs two folds)"
        )

    alpha = _number(doc.gate.alpha, "gate.alpha", file, lo=1e-6, hi=0.2)
    power = _number(doc.gate.power, "gate.power", file, lo=0.5, hi=0.9999)
    assert alpha is not None and power is not None  # required keys

    patterns = tuple(doc.limits.groups.patterns)
    if not patterns or any(not p for p in patterns):
        raise InputError(f"policy {file}: limits.groups.patterns must list at least one pattern")
    groups = GroupLimits(
        patterns=patterns, limits=_metric_limits(doc.limits.groups, "limits.groups", file)
    )
    per_attack: dict[str, MetricLimits] = {}
    if doc.limits.attack is not None:
        for attack in raw["limits"]["attack"]:  # in the file's order
            table = getattr(doc.limits.attack, attack)
            per_attack[attack] = _metric_limits(table, f"limits.attack.{attack}", file)
    overall = _metric_limits(doc.limits, "limits", file)

    allowed_init = _names(doc.init.allowed_modes, "init.allowed_modes", file, INIT_MODES)
    if not allowed_init:
        raise InputError(f"policy {file}: init.allowed_modes must name at least one mode")

    min_accuracy = _number(doc.utility.min_accuracy, "utility.min_accuracy", file, hi=1.0)
    assert min_accuracy is not None  # a required key
    min_gain = _number(
        doc.utility.min_gain_over_naive, "utility.min_gain_over_naive", file, lo=-1.0, hi=1.0
    )
    dp_max_epsilon = dp_max_delta = None
    if doc.dp is not None:
        dp_max_epsilon = _number(doc.dp.max_epsilon, "dp.max_epsilon", file)
        if dp_max_epsilon is None or dp_max_epsilon <= 0:
            raise InputError(f"policy {file}: dp.max_epsilon must be above 0")
        dp_max_delta = _number(doc.dp.max_delta, "dp.max_delta", file, hi=1.0)
        if dp_max_delta is not None and not 0 < dp_max_delta < 1:
            raise InputError(f"policy {file}: dp.max_delta must be in (0, 1)")

    return Policy(
        name=name,
        description=doc.policy.description,
        required_attacks=required,
        min_shadows=doc.audit.min_shadows,
        alpha=alpha,
        power=power,
        overall=overall,
        per_attack=per_attack,
        groups=groups,
        allow_near_copies_in_bundle=doc.copies.allow_near_copies_in_bundle,
        allowed_init_modes=allowed_init,
        min_accuracy=min_accuracy,
        min_gain_over_naive=min_gain,
        sha256=hashlib.sha256(text).hexdigest(),  # hashing.bytes_sha256 without NumPy: the CLI
        # reads the policy before anything heavy is imported
        source_name=file,
        dp_max_epsilon=dp_max_epsilon,
        dp_max_delta=dp_max_delta,
        require_replay=doc.release.require_replay if doc.release is not None else False,
        demonstration=doc.policy.demonstration,
    )


def shipped_policy_path(name: str) -> Path:
    """The packaged file of a shipped policy (``rcig_release/policies/NAME.toml``, package data)."""
    if name not in SHIPPED_SHA256:
        raise InputError(_unknown_policy(name))
    return Path(str(importlib.resources.files("rcig_release").joinpath("policies", f"{name}.toml")))


def _unknown_policy(spec: str) -> str:
    return (
        f"--policy {spec!r}: no shipped policy of that name and no such file (shipped: "
        f"{', '.join(SHIPPED_SHA256)}; or the path of a policy TOML file)"
    )


def resolve_policy(spec: str | Path) -> Path:
    """``--policy``'s value: a shipped policy's name (default, strict, dp, demo) or a file's path.

    An existing file wins over a name (``./default`` is read as a file); an unknown name or a
    missing file is an ``InputError`` listing the shipped policies. Reads nothing but the file
    system's metadata, so the CLI calls it before any data or JAX is loaded."""
    text = str(spec)
    path = Path(text)
    if path.is_file():
        return path
    if path.exists():
        raise InputError(f"--policy {text!r} is not a file")
    if text in SHIPPED_SHA256:
        return shipped_policy_path(text)
    raise InputError(_unknown_policy(text))


def load_policy(path: str | Path) -> Policy:
    """Reads a policy file (a regular file; a symlink is read like any input, not bundled) or a
    shipped policy by name (``resolve_policy``)."""
    from rcig_release import limits

    path = resolve_policy(path)
    try:
        limits.check_file_bytes(path.stat().st_size, f"policy file {path.name}")  # before reading
        text = path.read_bytes()
    except OSError:
        raise InputError(f"policy file not readable: {path.name}") from None
    return parse_policy(text, path.name)
