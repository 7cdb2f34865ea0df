"""Every statistic the release gate reads, recomputed from the audit's raw files.

``audit.json`` is the audit's report; the gate does not take its numbers on trust. What a policy
rule reads — the game's p-values per attack, group and fold, each fold's IN/OUT counts (which set
the power), the observed AUC and TPR, the ε lower bounds with their largest showable value,
confidence and family, the shadow count, the init group (its size, whether its shadows were
init-aware), and a DP run's empirical ε at the run's δ — is recomputed here from:

- ``game_scores.npz``: ``keep`` and one ``[K, N]`` score array per attack (each shadow scored as a
  target by its fold's references; written by the audit in float64, the values it computed with);
- ``keep.npy``: the coins, which must equal ``game_scores.npz`` ``keep`` **and** the coins the
  audit's seed draws (``game.draw_keep``): the coins cannot be chosen after the scores;
- ``records.json``: the audit records (indices only), which must be the records the audit's seed
  draws from the private data (``runner.sample_records``), with every init record of the run among
  the members; the records' classes come from the private data's labels, the init group from the
  run's own init indices (``RUN/distilled.npz``): only a real initialisation has an init group
  (noise, ``mean`` and ``centroids`` runs have none; a record flagged as theirs is refused,
  ``init_group_problem``);
- ``audit_config.json``: δ, the ε confidence, the seed, the sizes (``audit.json`` ``config`` must
  agree with it),

with the audit's own functions (``game.statistics``, ``dpcheck.dp_section``), so that the
recomputation is the audit's computation. A field of ``audit.json`` that differs from its
recomputation beyond float tolerance (``RTOL``, ``ATOL``; ``EPS_ATOL`` for ε bounds, whose root
search stops at 1e-6) is an ``InputError`` naming the field (exit 2 at release); the decision then
reads only the recomputed values (``substitute``).

What is still trusted: the score files themselves. The game's scores come from the shadow
pipelines the audit trained; recomputing them means re-running the audit (``--replay`` is the
bundle's binding of the released bytes, not of the audit).

A bundle carries ``report/game_scores.npz`` (the audit's file, byte for byte) and
``report/game_records.json`` (each audit record's class and init flag, in the game's order; no
index, no pixel), and ``verify`` recomputes the game from them in the same way (``from_bundle``):
an edited ``report/audit.json`` or score file that changes a statistic is a problem line. A reader
can do the same with ``recompute(...)``.

Interface (pure unless noted):

- ``GameInputs``: scores, keep, record classes (None: class groups not recomputed), init flags,
  number of classes, δ, ε confidence α, seed.
- ``recompute(inputs, init_mode=, run_dp=None, parts=("game", "dp")) -> dict``: the recomputed
  fields, laid out as in ``audit.json`` (``n_shadows``, ``config.shadows``, ``init``, ``game``
  with ``attacks`` and ``epsilon``, ``dp``); memoised on the inputs' bytes.
- ``differences(audit, recomputed) -> list[(field, have, want)]``, ``describe``, ``check`` (raises).
- ``substitute(audit, recomputed) -> dict``: a copy of ``audit`` with the recomputed fields.
- ``read_audit_dir(audit_dir) -> RawAudit`` (reads files), ``inputs_from_audit_dir(raw, ...)``,
  ``bundle_files(raw, inputs)``, ``from_bundle(files, audit, n_classes)``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rcig_release.audits.config import ATTACKS
from rcig_release.errors import InputError
from rcig_release.safeio import loads_json

if TYPE_CHECKING:
    from rcig_release.release.inputs import ReleaseInputs

GAME_SCORES = "game_scores.npz"
KEEP = "keep.npy"
RECORDS = "records.json"
AUDIT_CONFIG = "audit_config.json"
BUNDLE_SCORES = "report/game_scores.npz"
BUNDLE_RECORDS = "report/game_records.json"
RAW_FILES = f"{GAME_SCORES}, {KEEP}, {RECORDS}, {AUDIT_CONFIG}"

RTOL = 1e-6
ATOL = 1e-9
EPS_ATOL = 1e-5  # ε bounds: the one-run root search stops at xtol 1e-6
# Recorded strings that name a library version rather than a result: not compared.
_NOT_COMPARED = frozenset({"method"})
_SCORE_NAMES = ATTACKS + ("nearest_feature",)  # the arrays game_scores.npz may hold
_MISSING = object()


@dataclasses.dataclass(frozen=True, eq=False)
class GameInputs:
    """What the game's statistics are a function of."""

    scores: Mapping[str, np.ndarray]  # attack -> float64 [K, N]
    keep: np.ndarray  # bool [K, N]: the game's coins
    record_class: np.ndarray | None  # int64 [N]; None: class groups are not recomputed
    init: np.ndarray  # bool [N]: the release's init records (members a real init started from)
    n_classes: int
    delta: float  # δ of the game's ε bounds
    alpha: float  # 1 − their joint confidence (audit config ``epsilon_alpha``)
    seed: int  # the audit's seed (the coins are drawn from it)

    def key(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.scores):
            a = np.ascontiguousarray(self.scores[name])
            h.update(f"{name}\0{a.dtype.str}{a.shape}\0".encode() + a.tobytes())
        h.update(np.ascontiguousarray(self.keep).tobytes() + repr(self.keep.shape).encode())
        if self.record_class is not None:
            h.update(b"cls" + np.ascontiguousarray(self.record_class, np.int64).tobytes())
        h.update(b"init" + np.ascontiguousarray(self.init).tobytes())
        h.update(repr((self.n_classes, self.delta, self.alpha, self.seed)).encode())
        return h.hexdigest()


# ---- the recomputation (pure) -----------------------------------------------------------------

_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 16


def check_coins(inputs: GameInputs, where: str) -> None:
    """The coins must be those the audit's seed draws: InputError naming ``where`` otherwise."""
    from rcig_release.audits import game

    K, N = inputs.keep.shape
    if K < 2 or K % 2:
        raise InputError(f"{where}: keep must have an even number >= 2 of shadows, has {K}")
    if not np.array_equal(inputs.keep, game.draw_keep(K, N, inputs.seed)):
        raise InputError(
            f"{where}: keep is not the coins the audit's seed ({inputs.seed}) draws for "
            f"{K} shadows and {N} records"
        )


def _groups(inputs: GameInputs) -> dict[str, np.ndarray]:
    from rcig_release.audits import game

    n = inputs.keep.shape[1]
    if inputs.record_class is None:
        g = {"all": np.ones(n, bool)}
        if inputs.init.any():
            g["init"] = inputs.init
        return g
    return game.record_groups(inputs.record_class, inputs.init, inputs.n_classes)


def _memo(key: tuple, compute: Any) -> Any:
    if key not in _CACHE:
        _CACHE[key] = json.loads(json.dumps(compute(), allow_nan=True))  # the JSON audit.json has
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return copy.deepcopy(_CACHE[key])


def recompute(
    inputs: GameInputs,
    *,
    init_mode: str | None,
    run_dp: Mapping | None = None,
    parts: tuple[str, ...] = ("game", "dp"),
) -> dict[str, Any]:
    """The fields of ``audit.json`` the gate reads, recomputed from ``inputs`` with the audit's
    own functions. ``parts``: ``"game"`` (the game's statistics; needs ``record_class``), ``"dp"``
    (a DP run's section, when ``run_dp`` is given). Always: ``n_shadows``, ``config.shadows``,
    ``init.n_init_records``, ``init.init_aware_shadows``. Memoised on the inputs' bytes; the
    caller gets its own copy."""
    from rcig_release.audits import dpcheck, game

    K = int(inputs.keep.shape[0])
    n_init = int(inputs.init.sum())
    out: dict[str, Any] = {
        "n_shadows": K,
        "config": {"shadows": K},
        "init": {
            "n_init_records": n_init,
            "init_aware_shadows": bool(init_mode == "real" and n_init > 0),
        },
    }
    groups = _groups(inputs)
    scores = {k: np.asarray(v, np.float64) for k, v in inputs.scores.items()}
    if "game" in parts:
        if inputs.record_class is None:
            raise ValueError("the game's class groups need the records' classes")

        def stats() -> dict:
            st = game.statistics(
                scores, inputs.keep, groups, delta=inputs.delta, alpha=inputs.alpha
            )
            return {"attacks": st["attacks"], "epsilon": st["epsilon"]}

        out["game"] = _memo(("game", inputs.key()), stats)
    if "dp" in parts and run_dp is not None:
        out["dp"] = _memo(
            (
                "dp",
                dataclasses.replace(inputs, record_class=None).key(),  # classes are not used
                json.dumps(run_dp, sort_keys=True, default=str),
            ),
            lambda: dpcheck.dp_section(run_dp, scores, inputs.keep, groups, alpha=inputs.alpha),
        )
    return out


# ---- comparing and substituting ---------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _probability(x: Any) -> bool:
    """A number strictly between 0 and 1."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 < float(x) < 1.0


def _same(have: Any, want: Any, eps: bool) -> bool:
    if want is None or (isinstance(want, float) and math.isnan(want)):
        return have is None or (isinstance(have, float) and math.isnan(have))
    if isinstance(want, bool) or isinstance(want, str):
        return type(have) is type(want) and have == want
    if isinstance(want, int):
        return _is_number(have) and float(have) == float(want)
    if isinstance(want, float):
        if not _is_number(have) or not math.isfinite(float(have)):
            return False
        tol = (EPS_ATOL if eps else ATOL) + RTOL * abs(want)
        return abs(float(have) - want) <= tol
    return have == want


def _walk(path: str, have: Any, want: Any, out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            out.append((path, have, want))
            return
        for k, v in want.items():
            if k in _NOT_COMPARED:
                continue
            _walk(f"{path}.{k}" if path else str(k), have.get(k, _MISSING), v, out)
        return
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            out.append((path, have, want))
            return
        for i, (h, w) in enumerate(zip(have, want, strict=True)):
            _walk(f"{path}[{i}]", h, w, out)
        return
    eps = "epsilon" in path.rsplit(".", 1)[-1]
    if have is _MISSING or not _same(have, want, eps):
        out.append((path, have, want))


def differences(audit: Mapping, recomputed: Mapping) -> list[tuple[str, Any, Any]]:
    """(field, audit.json's value, recomputed value) for every recomputed field that differs, and
    every attack or group ``audit.json``'s game states that the score files do not hold."""
    out: list[tuple[str, Any, Any]] = []
    _walk("", audit, recomputed, out)
    want_attacks = (recomputed.get("game") or {}).get("attacks")
    game = audit.get("game")
    have_attacks = game.get("attacks") if isinstance(game, Mapping) else None
    if isinstance(want_attacks, Mapping) and isinstance(have_attacks, Mapping):
        for name, a in have_attacks.items():
            if name not in want_attacks:
                out.append((f"game.attacks.{name}", "present", _MISSING))
                continue
            groups = a.get("groups") if isinstance(a, Mapping) else None
            for g in groups if isinstance(groups, Mapping) else ():
                if g not in want_attacks[name]["groups"]:
                    out.append((f"game.attacks.{name}.groups.{g}", "present", _MISSING))
    return out


def _short(x: Any) -> str:
    if x is _MISSING:
        return "absent"
    s = json.dumps(x, ensure_ascii=False, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


def describe(diffs: list[tuple[str, Any, Any]], what: str, source: str) -> str:
    """One line: the first differing field (of ``what``), both values, and how many more."""
    field, have, want = diffs[0]
    if want is _MISSING:
        line = f"{what}: {field} is not in {source}"
    elif have is _MISSING:
        line = f"{what}: {field} is missing (recomputed from {source}: {_short(want)})"
    else:
        line = f"{what}: {field} is {_short(have)}, recomputed from {source}: {_short(want)}"
    more = len(diffs) - 1
    return line + (f" (and {more} more field{'s' if more > 1 else ''})" if more else "")


def check(audit: Mapping, recomputed: Mapping, what: str, source: str) -> None:
    """InputError naming the first field of ``audit`` that differs from ``recomputed``."""
    diffs = differences(audit, recomputed)
    if diffs:
        raise InputError(describe(diffs, what, source))


def substitute(audit: Mapping, recomputed: Mapping) -> dict:
    """A copy of ``audit`` whose recomputed fields are the recomputed values: the game's
    ``attacks`` and ``epsilon`` (its ``rounds`` kept), the shadow count, the init group, ``dp``."""
    out = copy.deepcopy(dict(audit))
    rec = copy.deepcopy(dict(recomputed))
    out["n_shadows"] = rec["n_shadows"]
    cfg = out.get("config")
    out["config"] = {**(cfg if isinstance(cfg, Mapping) else {}), **rec["config"]}
    init = out.get("init")
    out["init"] = {**(init if isinstance(init, Mapping) else {}), **rec["init"]}
    if "game" in rec:
        game = out.get("game")
        out["game"] = {**(game if isinstance(game, Mapping) else {}), **rec["game"]}
    if "dp" in rec:
        out["dp"] = rec["dp"]
    return out


# ---- the audit directory (release) ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RawAudit:
    """The audit directory's raw files: their bytes (bundled as they are) and their content."""

    scores_bytes: bytes
    scores: dict[str, np.ndarray]
    keep: np.ndarray
    records: dict[str, list[int]]
    config: dict[str, Any]


def _load_scores(data: bytes, what: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from rcig_release.release.inputs import load_npz

    arrays = load_npz(data, what)
    keep = arrays.pop("keep", None)
    if keep is None or keep.dtype != bool or keep.ndim != 2 or 0 in keep.shape:
        raise InputError(f"{what}: keep must be a non-empty boolean [K, N] array")
    unknown = sorted(set(arrays) - set(_SCORE_NAMES))
    if unknown:
        raise InputError(f"{what}: unknown attack {unknown[0]!r}")
    if not arrays:
        raise InputError(f"{what}: holds no attack's scores")
    scores = {}
    for name, s in arrays.items():
        if s.shape != keep.shape or not np.issubdtype(s.dtype, np.floating):
            raise InputError(f"{what}: {name} must be float [K, N] = {list(keep.shape)}")
        if s.dtype != np.float64:  # the audit computed its statistics from float64 scores
            raise InputError(
                f"{what}: {name} is {s.dtype}, not the float64 scores the statistics were "
                "computed from (an audit from before the gate recomputed it; re-run "
                "rcig-release audit)"
            )
        if not np.isfinite(s).all():
            raise InputError(f"{what}: {name} has non-finite scores")
        scores[name] = s.astype(np.float64)
    return scores, keep


def load_game_scores(
    data: bytes, what: str = BUNDLE_SCORES
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A ``game_scores.npz``'s attack scores (float64 ``[K, N]`` each) and its coins ``keep``,
    checked as the recomputation checks them (InputError naming ``what``)."""
    return _load_scores(data, what)


def _index_list(x: Any, what: str) -> list[int]:
    if not isinstance(x, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in x
    ):
        raise InputError(f"{what} must be a list of integers")
    if any(v < 0 for v in x):
        raise InputError(f"{what} must hold indices >= 0")
    return x


def read_audit_dir(audit_dir: str | Path) -> RawAudit:
    """Reads RUN/audit/{game_scores.npz, keep.npy, records.json, audit_config.json} (no symlink
    followed); malformed or missing: InputError naming the file. Checks that ``keep.npy`` is
    ``game_scores.npz``'s ``keep`` and that the records match its size."""
    from rcig_release.release.inputs import json_object, read_nofollow

    d = Path(audit_dir)
    hint = " (an audit from before the gate recomputed it; re-run rcig-release audit)"

    def read(name: str) -> bytes:
        try:
            return read_nofollow(d / name, f"RUN/audit/{name}")
        except InputError as e:
            raise InputError(f"{e}{hint if 'not found' in str(e) else ''}") from None

    scores_bytes = read(GAME_SCORES)
    scores, keep = _load_scores(scores_bytes, f"RUN/audit/{GAME_SCORES}")
    keep_bytes = read(KEEP)
    try:
        keep_file = np.load(io.BytesIO(keep_bytes), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise InputError(f"RUN/audit/{KEEP} is not a readable .npy array") from None
    if not isinstance(keep_file, np.ndarray) or not np.array_equal(keep_file, keep):
        raise InputError(f"RUN/audit/{KEEP} differs from the keep in RUN/audit/{GAME_SCORES}")
    rec_raw = json_object(read(RECORDS), f"RUN/audit/{RECORDS}")
    records = {
        k: _index_list(rec_raw.get(k), f"RUN/audit/{RECORDS}: {k}")
        for k in ("members", "nonmembers", "population", "init_records", "calibration")
    }
    if len(records["members"]) + len(records["nonmembers"]) != keep.shape[1]:
        raise InputError(
            f"RUN/audit/{RECORDS}: {len(records['members'])} members + "
            f"{len(records['nonmembers'])} non-members, but the game has {keep.shape[1]} records"
        )
    config = json_object(read(AUDIT_CONFIG), f"RUN/audit/{AUDIT_CONFIG}")
    for k in ("seed", "shadows", "records", "population"):
        v = config.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise InputError(f"RUN/audit/{AUDIT_CONFIG}: {k} must be a non-negative integer")
    for k in ("delta", "epsilon_alpha"):
        v = config.get(k)
        if not _probability(v):
            raise InputError(f"RUN/audit/{AUDIT_CONFIG}: {k} must be a number in (0, 1)")
    if config["shadows"] != keep.shape[0]:
        raise InputError(
            f"RUN/audit/{AUDIT_CONFIG}: shadows is {config['shadows']}, the game has "
            f"{keep.shape[0]}"
        )
    return RawAudit(scores_bytes, scores, keep, records, config)


def _init_mask(records: Mapping[str, list[int]], init_indices: np.ndarray | None) -> np.ndarray:
    members = np.asarray(records["members"], np.int64)
    init = np.zeros(len(members) + len(records["nonmembers"]), bool)
    if init_indices is not None:
        idx = np.asarray(init_indices, np.int64)
        init[: len(members)] = np.isin(members, idx[idx >= 0])
    return init


def inputs_from_audit_dir(
    raw: RawAudit,
    *,
    init_indices: np.ndarray | None,
    n_classes: int,
    labels: tuple[np.ndarray, np.ndarray] | None = None,
) -> GameInputs:
    """The game's inputs from the audit directory and the run. ``init_indices``: the training
    record each released image started from (-1: noise), from RUN/distilled.npz; ``labels``:
    the private (y_train, y_test), for the records' classes and the check that records.json is
    what the audit's seed draws (None: neither, e.g. before the private data are read).

    Raises InputError: an init record of the run not among the audited members; records.json not
    the records the seed draws; a label out of range.
    """
    rec = raw.records
    idx = None if init_indices is None else np.asarray(init_indices, np.int64)
    if idx is not None:
        missing = np.setdiff1d(idx[idx >= 0], np.asarray(rec["init_records"], np.int64))
        if missing.size or not np.isin(idx[idx >= 0], rec["members"]).all():
            raise InputError(
                f"RUN/audit/{RECORDS}: {max(1, missing.size)} init record(s) of the run are not "
                "among the audit's init records and members: not the audit of this run"
            )
    record_class = None
    if labels is not None:
        record_class = _check_records(raw, labels, n_classes)
    gi = GameInputs(
        scores=raw.scores,
        keep=raw.keep,
        record_class=record_class,
        init=_init_mask(rec, idx),
        n_classes=int(n_classes),
        delta=float(raw.config["delta"]),
        alpha=float(raw.config["epsilon_alpha"]),
        seed=int(raw.config["seed"]),
    )
    check_coins(gi, f"RUN/audit/{KEEP}")
    return gi


def _check_records(
    raw: RawAudit, labels: tuple[np.ndarray, np.ndarray], n_classes: int
) -> np.ndarray:
    from rcig_release.audits.config import AuditConfig
    from rcig_release.audits.runner import sample_records

    y_train, y_test = (np.asarray(y, np.int64).reshape(-1) for y in labels)
    rec = raw.records
    for name, split, n in (
        ("members", "training", len(y_train)),
        ("nonmembers", "held-out", len(y_test)),
        ("population", "held-out", len(y_test)),
        ("init_records", "training", len(y_train)),
    ):
        if any(v >= n for v in rec[name]):
            raise InputError(
                f"RUN/audit/{RECORDS}: {name} has indices beyond the {split} split ({n} images)"
            )
    cfg = AuditConfig(
        records=raw.config["records"], population=raw.config["population"], seed=raw.config["seed"]
    )
    try:
        drawn = sample_records(y_train, len(y_test), cfg, np.asarray(rec["init_records"], np.int64))
    except InputError:
        drawn = None
    if drawn is None or any(drawn[k] != rec[k] for k in rec):
        raise InputError(
            f"RUN/audit/{RECORDS}: not the records the audit's seed ({cfg.seed}) draws from the "
            "private data"
        )
    cls = np.concatenate([y_train[rec["members"]], y_test[rec["nonmembers"]]])
    if cls.size and (cls.min() < 0 or cls.max() >= n_classes):
        raise InputError(f"the private labels of the audit records are not in [0, {n_classes})")
    return cls


def check_config(audit: Mapping, raw: RawAudit) -> None:
    """``audit.json`` ``config`` must be ``audit_config.json`` (the configuration the audit ran)."""
    have = audit.get("config")
    if not isinstance(have, Mapping):
        raise InputError("audit.json: config missing")
    for k in sorted(set(have) | set(raw.config)):
        if have.get(k, _MISSING) != raw.config.get(k, _MISSING):
            raise InputError(
                f"audit.json: config.{k} is {_short(have.get(k, _MISSING))}, "
                f"RUN/audit/{AUDIT_CONFIG} has {_short(raw.config.get(k, _MISSING))}"
            )


# ---- the bundle (verify) ----------------------------------------------------------------------


def bundle_files(raw: RawAudit, inputs: GameInputs) -> dict[str, bytes]:
    """What a bundle carries so that ``verify`` (and any reader) can recompute the game: the
    audit's score file byte for byte and each record's class and init flag, in the game's order
    (no training index, no pixel)."""
    if inputs.record_class is None:
        raise ValueError("the records' classes are needed in a bundle")
    doc = {
        "about": (
            "The audit's game records in the order of the columns of game_scores.npz (members "
            "first): each record's class and whether a real initialisation started from it. "
            "rcig_release.release.recompute recomputes every statistic the gate reads from these "
            "and game_scores.npz."
        ),
        "n_records": int(inputs.keep.shape[1]),
        "record_class": [int(c) for c in inputs.record_class],
        "init": [bool(b) for b in inputs.init],
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    return {BUNDLE_SCORES: raw.scores_bytes, BUNDLE_RECORDS: text.encode("utf-8")}


def from_bundle(files: Mapping[str, bytes], audit: Mapping, n_classes: int) -> GameInputs:
    """The game's inputs from a bundle: ``report/game_scores.npz``, ``report/game_records.json``
    and the bundled audit's ``config`` (δ, ε confidence, seed). InputError naming the file when
    one is missing or malformed, or when its coins are not those the seed draws."""
    for path in (BUNDLE_SCORES, BUNDLE_RECORDS):
        if path not in files:
            raise InputError(f"missing: {path} (the game's statistics cannot be recomputed)")
    scores, keep = _load_scores(files[BUNDLE_SCORES], BUNDLE_SCORES)
    doc = loads_json(files[BUNDLE_RECORDS], BUNDLE_RECORDS)  # depth and digit caps: one line
    n = keep.shape[1]
    cls = doc.get("record_class") if isinstance(doc, dict) else None
    init = doc.get("init") if isinstance(doc, dict) else None
    if (
        not isinstance(cls, list)
        or len(cls) != n
        or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n_classes for c in cls
        )
    ):
        raise InputError(
            f"{BUNDLE_RECORDS}: record_class must be {n} class ids in [0, {n_classes})"
        )
    if not isinstance(init, list) or len(init) != n or not all(isinstance(b, bool) for b in init):
        raise InputError(f"{BUNDLE_RECORDS}: init must be {n} booleans")
    cfg = audit.get("config")
    cfg = cfg if isinstance(cfg, Mapping) else {}
    seed, delta, alpha = cfg.get("seed"), cfg.get("delta"), cfg.get("epsilon_alpha")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError("report/audit.json: config.seed must be a non-negative integer")
    for k, v in (("delta", delta), ("epsilon_alpha", alpha)):
        if not _probability(v):
            raise InputError(f"report/audit.json: config.{k} must be a number in (0, 1)")
    inputs = GameInputs(
        scores=scores,
        keep=keep,
        record_class=np.asarray(cls, np.int64),
        init=np.asarray(init, bool),
        n_classes=int(n_classes),
        delta=float(delta),  # type: ignore[arg-type]  # checked above
        alpha=float(alpha),  # type: ignore[arg-type]
        seed=int(seed),
    )
    check_coins(inputs, BUNDLE_SCORES)
    return inputs


# ---- release: the audit the gate reads --------------------------------------------------------


def _mode(run_json: Mapping) -> str | None:
    from rcig_release.release.decision import init_mode

    return init_mode(run_json)


def init_group_problem(inputs: GameInputs, mode: str | None) -> str | None:
    """Only a real initialisation starts from records: a run of another mode (noise, and the
    aggregate ``mean``/``centroids``, whose images each average many records) has no init group,
    so audit records flagged as its init records are not this run's (None when consistent, or
    when the mode is unrecorded)."""
    n = int(inputs.init.sum())
    if mode is None or mode == "real" or n == 0:
        return None
    return (
        f"{n} audit record(s) are flagged as init records of a run whose init mode is {mode!r}: "
        "only a real initialisation starts from records"
    )


def _require_init_group(inputs: GameInputs, run_json: Mapping) -> None:
    problem = init_group_problem(inputs, _mode(run_json))
    if problem:
        raise InputError(problem)


def with_dp(inp: ReleaseInputs, raw: RawAudit, dp_statement: Mapping | None) -> ReleaseInputs:
    """A DP run's ``audit.json`` ``dp`` section recomputed from the score files alone (no private
    data), compared (InputError naming the field) and substituted. Unchanged without DP."""
    if dp_statement is None:
        return inp
    gi = inputs_from_audit_dir(raw, init_indices=inp.init_indices, n_classes=len(inp.classes))
    _require_init_group(gi, inp.run_json)
    rec = recompute(gi, init_mode=_mode(inp.run_json), run_dp=dp_statement, parts=("dp",))
    check(inp.audit, {"dp": rec["dp"]}, "audit.json", RAW_FILES)
    return dataclasses.replace(inp, audit={**inp.audit, "dp": rec["dp"]})


def with_game(inp: ReleaseInputs, raw: RawAudit, private: Any) -> ReleaseInputs:
    """Every field the gate reads recomputed from the raw files, the records' classes from the
    private labels (``private``: ``safety.PrivateSplits``), compared with ``audit.json``
    (InputError naming the first differing field) and substituted; the bundle's copy of the score
    files attached (``game_files``)."""
    if getattr(private, "y_train", None) is None or getattr(private, "y_test", None) is None:
        raise InputError(
            "the private data have no labels: the classes of the audit's records cannot be "
            "recomputed"
        )
    gi = inputs_from_audit_dir(
        raw,
        init_indices=inp.init_indices,
        n_classes=len(inp.classes),
        labels=(private.y_train, private.y_test),
    )
    _require_init_group(gi, inp.run_json)
    rec = recompute(gi, init_mode=_mode(inp.run_json), parts=("game",))
    check(inp.audit, rec, "audit.json", RAW_FILES)
    return dataclasses.replace(
        inp, audit=substitute(inp.audit, rec), game_files=bundle_files(raw, gi)
    )


# ---- verify -----------------------------------------------------------------------------------


def verify_audit(
    files: Mapping[str, bytes],
    audit: Mapping,
    run_json: Mapping,
    n_classes: int,
    problems: list[str],
) -> dict | None:
    """The bundled audit with every field the gate reads recomputed from the bundled score files;
    a difference, a missing or malformed score file, or coins that are not the seed's are
    problem lines. None when nothing can be recomputed."""
    if not isinstance(audit.get("game"), Mapping):
        return dict(audit)  # no game: the policy's game.present rule fails on it
    try:
        gi = from_bundle(files, audit, n_classes)
    except InputError as e:
        problems.append(str(e))
        return None
    problem = init_group_problem(gi, _mode(run_json))
    if problem:
        problems.append(f"{BUNDLE_RECORDS}: {problem}")
        return None
    dp = run_json.get("dp") if isinstance(run_json.get("dp"), Mapping) else None
    rec = recompute(gi, init_mode=_mode(run_json), run_dp=dp)
    diffs = differences(audit, rec)
    for d in diffs:
        problems.append(describe([d], "report/audit.json", f"{BUNDLE_SCORES} and {BUNDLE_RECORDS}"))
    return substitute(audit, rec)
