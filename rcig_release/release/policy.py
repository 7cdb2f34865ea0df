"""Release policies: a frozen schema, loaded from TOML with every key checked.

A policy is a set of limits on what the audit measured (per attack and per risk group), on copies,
on the audit's own strength (attacks run, shadows), on the initialisation, and on utility. Unknown
keys, missing keys and values of the wrong type are ``InputError``: a typo in a privacy policy must
never silently loosen it. The schema and the meaning of each key are in docs/release.md.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, Mapping

from rcig_release.errors import InputError
from rcig_release.release.hashing import bytes_sha256

ATTACK_NAMES = ("loss", "shadow", "lira_online", "lira_offline", "rmia", "nearest")
# Attacks a policy may name in [limits.attack.*]: the six above plus the audit's feature-space
# variant of the release-direct attack.
LIMITABLE_ATTACKS = ATTACK_NAMES + ("nearest_feature",)
INIT_MODES = ("real", "noise")
BOUNDS = ("ci_upper", "point")
UNRESOLVED = ("pass", "fail")
METRIC_KEYS = (
    "max_auc",
    "max_tpr_at_fpr_0_001",
    "max_tpr_at_fpr_0_01",
    "max_epsilon_lower_bound",
)


@dataclasses.dataclass(frozen=True)
class MetricLimits:
    """Upper limits on one attack's metrics. ``None`` (only in per-attack overrides) = inherit."""

    max_auc: float | None
    max_tpr_at_fpr_0_001: float | None
    max_tpr_at_fpr_0_01: float | None
    max_epsilon_lower_bound: float | None

    def merged(self, override: "MetricLimits | None") -> "MetricLimits":
        if override is None:
            return self
        return MetricLimits(
            **{k: (getattr(override, k) if getattr(override, k) is not None else getattr(self, k))
               for k in METRIC_KEYS}
        )


@dataclasses.dataclass(frozen=True)
class LimitSet:
    """Limits plus how to read the audit's numbers (interval upper end or point value)."""

    bound: str  # "ci_upper" | "point"
    unresolved: str  # "pass" | "fail": what a TPR the audit could not resolve (null) means
    limits: MetricLimits


@dataclasses.dataclass(frozen=True)
class GroupLimits:
    patterns: tuple[str, ...]  # fnmatch patterns over the audit's group names
    limit_set: LimitSet


@dataclasses.dataclass(frozen=True)
class Policy:
    name: str
    description: str
    required_attacks: tuple[str, ...]
    min_shadows: int
    overall: LimitSet
    per_attack: Mapping[str, MetricLimits]
    groups: GroupLimits
    max_near_copies: int
    allow_near_copies_in_bundle: bool
    allowed_init_modes: tuple[str, ...]
    min_accuracy: float
    min_gain_over_naive: float
    sha256: str  # of the policy file's bytes
    source_name: str  # the policy file's base name (never a path)


class _Table:
    """A TOML table being consumed key by key; leftovers are reported as unknown keys."""

    def __init__(self, data: Any, where: str, file: str):
        if not isinstance(data, dict):
            raise InputError(f"policy {file}: [{where}] must be a table")
        self.data = dict(data)
        self.where = where
        self.file = file

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def take(self, key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
        if key not in self.data:
            if optional:
                return None
            raise InputError(f"policy {self.file}: missing key {self._key(key)}")
        value = self.data.pop(key)
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise InputError(f"policy {self.file}: {self._key(key)} has the wrong type")
        if not isinstance(value, kind):
            raise InputError(f"policy {self.file}: {self._key(key)} has the wrong type")
        return value

    def number(self, key: str, *, lo: float = 0.0, hi: float | None = None, optional: bool = False):
        value = self.take(key, (int, float), optional=optional)
        if value is None:
            return None
        value = float(value)
        if value < lo or (hi is not None and value > hi):
            rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise InputError(f"policy {self.file}: {self._key(key)} must be in {rng}")
        return value

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.take(key, str)
        if value not in options:
            raise InputError(f"policy {self.file}: {self._key(key)} must be one of {', '.join(options)}")
        return value

    def strings(self, key: str, options: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self.take(key, list)
        if not all(isinstance(v, str) for v in value):
            raise InputError(f"policy {self.file}: {self._key(key)} must be a list of strings")
        if options is not None:
            bad = [v for v in value if v not in options]
            if bad:
                raise InputError(
                    f"policy {self.file}: {self._key(key)} has unknown value {bad[0]!r} "
                    f"(known: {', '.join(options)})"
                )
        return tuple(value)

    def sub(self, key: str, *, optional: bool = False) -> "_Table | None":
        value = self.take(key, dict, optional=optional)
        return None if value is None else _Table(value, self._key(key), self.file)

    def done(self) -> None:
        if self.data:
            raise InputError(f"policy {self.file}: unknown key {self._key(sorted(self.data)[0])}")


def _metric_limits(t: _Table, *, optional: bool) -> MetricLimits:
    return MetricLimits(
        max_auc=t.number("max_auc", hi=1.0, optional=optional),
        max_tpr_at_fpr_0_001=t.number("max_tpr_at_fpr_0_001", hi=1.0, optional=optional),
        max_tpr_at_fpr_0_01=t.number("max_tpr_at_fpr_0_01", hi=1.0, optional=optional),
        max_epsilon_lower_bound=t.number("max_epsilon_lower_bound", optional=optional),
    )


def _limit_set(t: _Table) -> LimitSet:
    return LimitSet(
        bound=t.choice("bound", BOUNDS),
        unresolved=t.choice("unresolved", UNRESOLVED),
        limits=_metric_limits(t, optional=False),
    )


def parse_policy(text: bytes, file: str = "<policy>") -> Policy:
    """Parses and validates a policy from the TOML file's bytes."""
    try:
        raw = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"policy {file}: not valid TOML ({e})") from None
    top = _Table(raw, "", file)

    meta = top.sub("policy")
    name = meta.take("name", str)
    description = meta.take("description", str, optional=True) or ""
    meta.done()

    audit = top.sub("audit")
    required = audit.strings("required_attacks", ATTACK_NAMES)
    min_shadows = audit.take("min_shadows", int)
    if min_shadows < 0:
        raise InputError(f"policy {file}: audit.min_shadows must be >= 0")
    audit.done()

    limits = top.sub("limits")
    groups_t = limits.sub("groups")
    patterns = groups_t.strings("patterns")
    groups = GroupLimits(patterns=patterns, limit_set=_limit_set(groups_t))
    groups_t.done()
    per_attack: dict[str, MetricLimits] = {}
    attack_t = limits.sub("attack", optional=True)
    if attack_t is not None:
        for attack in list(attack_t.data):
            if attack not in LIMITABLE_ATTACKS:
                raise InputError(f"policy {file}: unknown attack limits.attack.{attack}")
            sub = attack_t.sub(attack)
            per_attack[attack] = _metric_limits(sub, optional=True)
            sub.done()
        attack_t.done()
    overall = _limit_set(limits)
    limits.done()

    copies = top.sub("copies")
    max_near_copies = copies.take("max_near_copies", int)
    if max_near_copies < 0:
        raise InputError(f"policy {file}: copies.max_near_copies must be >= 0")
    allow_in_bundle = copies.take("allow_near_copies_in_bundle", bool)
    copies.done()

    init = top.sub("init")
    allowed_init = init.strings("allowed_modes", INIT_MODES)
    init.done()

    utility = top.sub("utility")
    min_accuracy = utility.number("min_accuracy", hi=1.0)
    min_gain = utility.number("min_gain_over_naive", lo=-1.0, hi=1.0)
    utility.done()
    top.done()

    return Policy(
        name=name,
        description=description,
        required_attacks=required,
        min_shadows=min_shadows,
        overall=overall,
        per_attack=per_attack,
        groups=groups,
        max_near_copies=max_near_copies,
        allow_near_copies_in_bundle=allow_in_bundle,
        allowed_init_modes=allowed_init,
        min_accuracy=min_accuracy,
        min_gain_over_naive=min_gain,
        sha256=bytes_sha256(text),
        source_name=file,
    )


def load_policy(path: str | Path) -> Policy:
    """Reads a policy file (a regular file; a symlink is read like any input, not bundled)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError:
        raise InputError(f"policy file not readable: {path.name}") from None
    return parse_policy(text, path.name)
