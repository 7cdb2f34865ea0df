"""Release policies: a frozen schema, loaded from TOML with every key checked.

A policy is a set of rules over the audit's membership game (docs/audit.md, "The game"): every
attack that beats chance significantly refuses, at a family-wise false-refusal rate ``gate.alpha``
for a release whose attacks are at chance; each such rule must also be *decidable* at the audit's
sizes (power ≥ ``gate.power`` to detect an attack at the policy's ``detect_*`` effect sizes), or it
fails closed. Besides: limits on the game's ε lower bounds, the audit's strength (attacks run,
shadows), the initialisation, utility, and (optional ``[dp]``) the run's proven
differential-privacy guarantee. Unknown keys, missing keys, values of the wrong type,
NaN and values outside their meaningful range are ``InputError``: a typo in a privacy policy must
never silently loosen it. The schema and the meaning of each key are in docs/release.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

from rcig_release.errors import InputError

ATTACK_NAMES = ("loss", "shadow", "lira_online", "lira_offline", "rmia", "nearest")
# Attacks a policy may name in [limits.attack.*]: the six above plus the audit's feature-space
# variant of the release-direct attack.
LIMITABLE_ATTACKS = ATTACK_NAMES + ("nearest_feature",)
INIT_MODES = ("real", "noise", "mean", "centroids")
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
    "default": "e562feccb7e3ced1c49e1b0b7297a6928285e90d901953a9122e02e4342e0edd",
    "strict": "fe5f94152d3a722d9dd6190ba04e792693c22e305cb13ef7a14af76046a618dd",
    "dp": "7a4f81596fc972460c520f8ee2032c7a4c144aaa2f9e235d3db2fdfb806e1ff4",
    "demo": "1f2fbdf7d770e4b32e66ee8718926ca176ec1b0d2c9b89752e207b915a9becc1",
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
            old = [k for k, v in _RENAMED.items() if v == key and k in self.data]
            hint = (
                f" ({self._key(old[0])} is the earlier schema's key: see docs/release.md)"
                if old
                else ""
            )
            raise InputError(f"policy {self.file}: missing key {self._key(key)}{hint}")
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
        if not math.isfinite(value):
            raise InputError(f"policy {self.file}: {self._key(key)} must be a finite number")
        if value < lo or (hi is not None and value > hi):
            rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise InputError(f"policy {self.file}: {self._key(key)} must be in {rng}")
        return value

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.take(key, str)
        if value not in options:
            raise InputError(
                f"policy {self.file}: {self._key(key)} must be one of {', '.join(options)}"
            )
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

    @overload
    def sub(self, key: str, *, optional: Literal[False] = False) -> _Table: ...

    @overload
    def sub(self, key: str, *, optional: bool) -> _Table | None: ...

    def sub(self, key: str, *, optional: bool = False) -> _Table | None:
        value = self.take(key, dict, optional=optional)
        return None if value is None else _Table(value, self._key(key), self.file)

    def done(self) -> None:
        if self.data:
            key = sorted(self.data)[0]
            hint = ""
            if key in _RENAMED:
                new = _RENAMED[key]
                hint = (
                    f" (the gate now tests the audit's game: use {new}, see docs/release.md)"
                    if new
                    else " (no longer used: see docs/release.md)"
                )
            raise InputError(f"policy {self.file}: unknown key {self._key(key)}{hint}")


def _metric_limits(t: _Table, *, optional: bool, off_ok: bool = True) -> MetricLimits:
    def off(key: str) -> bool:
        """``key = false``: the rule is explicitly not applied (a missing key stays an error);
        not in a per-attack table, where an absent value means "the overall limit"."""
        if t.data.get(key) is False and off_ok:
            del t.data[key]
            return True
        return False

    def above(key: str, floor: float) -> float | None:
        if off(key):
            return None
        v = t.number(key, hi=1.0, optional=optional)
        if v is not None and v <= floor:
            raise InputError(f"policy {t.file}: {t._key(key)} must be above {floor:g} (chance)")
        return v

    return MetricLimits(
        detect_auc=above("detect_auc", 0.5),
        detect_tpr_at_fpr_0_01=above("detect_tpr_at_fpr_0_01", 0.01),
        detect_tpr_at_fpr_0_001=above("detect_tpr_at_fpr_0_001", 0.001),
        max_epsilon_lower_bound=None
        if off("max_epsilon_lower_bound")
        else t.number("max_epsilon_lower_bound", hi=50.0, optional=optional),
    )


def parse_policy(text: bytes, file: str = "<policy>") -> Policy:
    """Parses and validates a policy from the TOML file's bytes."""
    # depth, integer length and syntax: one line each (safeio), never a RecursionError
    from rcig_release.safeio import loads_toml  # (NumPy: not at the CLI's import)

    raw = loads_toml(text, f"policy {file}")
    top = _Table(raw, "", file)

    meta = top.sub("policy")
    name = meta.take("name", str)
    if not name.strip() or any(ord(ch) < 32 for ch in name):
        raise InputError(f"policy {file}: policy.name must be a non-empty single line")
    description = meta.take("description", str, optional=True) or ""
    demonstration = bool(meta.take("demonstration", bool, optional=True))
    meta.done()

    audit = top.sub("audit")
    required = audit.strings("required_attacks", ATTACK_NAMES)
    if not required:
        raise InputError(f"policy {file}: audit.required_attacks must name at least one attack")
    min_shadows = audit.take("min_shadows", int)
    if min_shadows < 2:
        raise InputError(
            f"policy {file}: audit.min_shadows must be >= 2 (the game needs two folds)"
        )
    audit.done()

    gate = top.sub("gate")
    alpha = gate.number("alpha", lo=1e-6, hi=0.2)
    power = gate.number("power", lo=0.5, hi=0.9999)
    gate.done()

    limits = top.sub("limits")
    groups_t = limits.sub("groups")
    patterns = groups_t.strings("patterns")
    if not patterns or any(not p for p in patterns):
        raise InputError(f"policy {file}: limits.groups.patterns must list at least one pattern")
    g_limits = _metric_limits(groups_t, optional=True)
    groups = GroupLimits(patterns=patterns, limits=g_limits)
    groups_t.done()
    per_attack: dict[str, MetricLimits] = {}
    attack_t = limits.sub("attack", optional=True)
    if attack_t is not None:
        for attack in list(attack_t.data):
            if attack not in LIMITABLE_ATTACKS:
                raise InputError(f"policy {file}: unknown attack limits.attack.{attack}")
            sub = attack_t.sub(attack)
            per_attack[attack] = _metric_limits(sub, optional=True, off_ok=False)
            sub.done()
        attack_t.done()
    overall = _metric_limits(limits, optional=False)
    limits.done()

    copies = top.sub("copies")
    allow_in_bundle = copies.take("allow_near_copies_in_bundle", bool)
    copies.done()

    init = top.sub("init")
    allowed_init = init.strings("allowed_modes", INIT_MODES)
    if not allowed_init:
        raise InputError(f"policy {file}: init.allowed_modes must name at least one mode")
    init.done()

    utility = top.sub("utility")
    min_accuracy = utility.number("min_accuracy", hi=1.0)
    min_gain = utility.number("min_gain_over_naive", lo=-1.0, hi=1.0, optional=True)
    utility.done()
    dp_max_epsilon = dp_max_delta = None
    dp_t = top.sub("dp", optional=True)
    if dp_t is not None:
        dp_max_epsilon = dp_t.number("max_epsilon")
        if dp_max_epsilon <= 0:
            raise InputError(f"policy {file}: dp.max_epsilon must be above 0")
        dp_max_delta = dp_t.number("max_delta", hi=1.0, optional=True)
        if dp_max_delta is not None and not 0 < dp_max_delta < 1:
            raise InputError(f"policy {file}: dp.max_delta must be in (0, 1)")
        dp_t.done()
    require_replay = False
    release_t = top.sub("release", optional=True)
    if release_t is not None:
        require_replay = release_t.take("require_replay", bool)
        release_t.done()
    top.done()

    return Policy(
        name=name,
        description=description,
        required_attacks=required,
        min_shadows=min_shadows,
        alpha=alpha,
        power=power,
        overall=overall,
        per_attack=per_attack,
        groups=groups,
        allow_near_copies_in_bundle=allow_in_bundle,
        allowed_init_modes=allowed_init,
        min_accuracy=min_accuracy,
        min_gain_over_naive=min_gain,
        sha256=hashlib.sha256(text).hexdigest(),  # hashing.bytes_sha256 without NumPy: the CLI
        # reads the policy before anything heavy is imported
        source_name=file,
        dp_max_epsilon=dp_max_epsilon,
        dp_max_delta=dp_max_delta,
        require_replay=require_replay,
        demonstration=demonstration,
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
