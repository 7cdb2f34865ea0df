"""Synthetic run directories for tests and demos of the release step (no training, no real data).

``fake_run`` writes RUN/{distilled.npz, run.json, eval.json, audit/audit.json} with a tiny random
"private" training split, so release and verify can be exercised in milliseconds. ``leak=True``
builds the planted-leak release (``--steps 0 --init real``: the released images ARE private
training images) with the audit figures such a release gets.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import types
from pathlib import Path

import numpy as np

from rcig_release.release.hashing import file_sha256
from rcig_release.release.safety import nearest_distances

CLASSES = ("zero", "one", "two")
FINGERPRINT = "sha256:" + "ab" * 32
RUN_SEED = 3  # run.json config.seed of the synthetic runs


def metrics(
    auc: float, tpr01: float | None, tpr1: float | None, eps: float, *, width: float = 0.04
) -> dict:
    """One attack's metric dict in the audit.json schema (issue 3)."""

    def ci(x):
        return None if x is None else [max(0.0, x - width), min(1.0, x + width)]

    return {
        "auc": auc,
        "auc_ci": ci(auc),
        "tpr_at_fpr": {"0.001": tpr01, "0.01": tpr1},
        "tpr_at_fpr_ci": {"0.001": ci(tpr01), "0.01": ci(tpr1)},
        "advantage": max(0.0, 2 * (auc - 0.5)),
        "epsilon_lower_bound": eps,
    }


CLEAN = metrics(0.51, None, 0.01, 0.05, width=0.03)
LEAK = metrics(0.99, 1.0, 1.0, 4.5, width=0.01)
ATTACKS = ("loss", "shadow", "lira_online", "lira_offline", "rmia", "nearest")


def private_data(
    n: int = 400, shape=(8, 8, 1), seed: int = 0, n_test: int = 400, n_classes: int = 3
) -> types.SimpleNamespace:
    """A uniform-noise "private" data set: ``x_train`` [n], ``x_test`` [n_test] (the held-out split
    the memorisation check measures its null on; enough images to resolve it for a few images),
    labels ``y_train``, ``y_test`` (index mod ``n_classes``, int64: the run's classes). The default
    sizes give the audit's game 200 + 200 records (``fake_run``): with 16 shadows, about 1,600 OUT
    guesses per fold, enough for the default policy's rules to be decidable, as on digits."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n + n_test, *shape)).astype(np.float32)
    return types.SimpleNamespace(
        x_train=x[:n],
        x_test=x[n:],
        y_train=np.arange(n, dtype=np.int64) % n_classes,
        y_test=np.arange(n_test, dtype=np.int64) % n_classes,
        fingerprint=FINGERPRINT,
    )


def drawn_init(data: types.SimpleNamespace, ipc: int, n_classes: int, seed: int) -> np.ndarray:
    """The init indices ``distill`` draws for a real-init run of this data (``initial_set``)."""
    from rcig_release.config import DistillConfig
    from rcig_release.distill import initial_set

    cfg = DistillConfig(ipc=ipc, init="real", seed=seed)
    return initial_set(cfg, data.x_train, data.y_train, n_classes)[2]


def loader_for(data: types.SimpleNamespace):
    """A ``load_private`` callable that records its calls and returns ``data``."""
    calls = []

    def load(source: str, seed: int):
        calls.append((source, seed))
        return data

    load.calls = calls  # type: ignore[attr-defined]  # read by the tests
    return load


@functools.lru_cache(maxsize=8)
def simulated_game(
    leak: bool,
    *,
    shadows: int = 16,
    records: int = 1000,
    n_init: int = 10,
    n_classes: int = 3,
    seed: int = 0,
    init_group: bool = False,
) -> dict:
    """``audit["game"]`` computed by the audit's own statistics (``game.statistics``) on simulated
    game scores at the audit's default sizes: every attack's scores independent of membership
    (a release at chance), or, with ``leak``, the init records' IN guesses ranked first by the
    release-direct attacks (the planted-leak release, whose released images are its init
    records). Nothing here is a hand-made metric."""
    from rcig_release.audits import game

    scores, keep, groups = simulated_scores(
        leak,
        shadows=shadows,
        records=records,
        n_init=n_init,
        n_classes=n_classes,
        seed=seed,
        init_group=init_group,
    )
    out = game.statistics(scores, keep, groups, delta=1e-8, alpha=0.01)
    out["rounds"] = [
        {"targets": t.tolist(), "references": r.tolist()} for t, r in game.folds(shadows)
    ]
    return out


def simulated_scores(
    leak: bool,
    *,
    shadows: int = 16,
    records: int = 1000,
    n_init: int = 10,
    n_classes: int = 3,
    seed: int = 0,
    shift: float = 20.0,
    init_group: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """The simulated game's (scores ``[K, N]`` per attack, keep ``[K, N]``, groups) behind
    ``simulated_game``: with ``leak``, the release-direct attacks' scores of the init records'
    IN guesses are raised by ``shift``; the init group exists with ``leak`` or ``init_group``."""
    rng = np.random.default_rng(seed)
    keep = rng.random((shadows, records)) < 0.5
    cls = np.arange(records) % n_classes
    groups = {"all": np.ones(records, bool)}
    if leak or init_group:
        init = np.zeros(records, bool)
        init[:n_init] = True
        groups["init"] = init
    groups.update({f"class_{c}": cls == c for c in range(n_classes)})
    scores = {}
    for a in ATTACKS + ("nearest_feature",):
        s = rng.standard_normal((shadows, records))
        if leak and a.startswith("nearest"):
            s[:, :n_init] += shift * keep[:, :n_init]
        scores[a] = s
    return scores, keep, groups


def dp_statement(
    *,
    noise_multiplier: float = 1.1,
    sampling_rate: float = 0.05,
    steps: int = 200,
    delta: float = 1e-5,
    clip_norm: float = 1.0,
    n_train: int = 200,
) -> dict:
    """A run.json ``dp`` object whose ε is the accountant's for these parameters
    (``dp.epsilon_for``), never a typed-in number."""
    from rcig_release.release.dp import GUARANTEE, accountant_version, epsilon_for

    eps = epsilon_for(noise_multiplier, delta, sampling_rate, steps)
    batch = sampling_rate * n_train
    return {
        "epsilon": eps,
        "target_epsilon": float(round(eps + 0.5)),
        "delta": delta,
        "noise_multiplier": noise_multiplier,
        "clip_norm": clip_norm,
        "sampling_rate": sampling_rate,
        "steps": steps,
        "expected_batch_size": batch,
        "max_batch_size": int(np.ceil(4 * batch)),
        **GUARANTEE,
        "mechanism": "DP-RCIG (per-example clipped, Gaussian-noised outer gradients)",
        "accountant_version": accountant_version(),
        "preprocessing": "pixel scaling to [0, 1] only (nothing fitted on private data)",
    }


def dp_audit_section(dp: dict, *, leak: bool) -> dict:
    """audit.json's ``dp`` as the audit computes it (``dpcheck.dp_section``) on the simulated game
    (``simulated_scores``): ``leak`` plants the init-record leak, whose ε lower bound at δ = 1e-5
    is about 1.28, above a small proven ε (a dp-violation)."""
    from rcig_release.audits import dpcheck

    scores, keep, groups = simulated_scores(leak)
    return dpcheck.dp_section(dp, scores, keep, groups, alpha=0.01)


def write_game_files(
    audit_dir: Path,
    data: types.SimpleNamespace,
    init_indices: np.ndarray,
    n_classes: int,
    *,
    leak_records: int | None = None,
    shadows: int = 16,
    seed: int = 0,
    shift: float = 20.0,
    dp: dict | None = None,
) -> tuple[dict, dict | None]:
    """The audit's raw files as ``run_audit`` writes them (``records.json``, ``keep.npy``,
    ``audit_config.json``, ``game_scores.npz``), for a game whose scores are simulated: records
    and coins drawn by the audit's own functions from the data and the seed, every attack's scores
    independent of membership, except that the release-direct attacks (``nearest*``) rank first
    the IN guesses of the leaking records: the run's init records when ``leak_records`` is None,
    else the first ``leak_records`` members (0: none). Returns ``audit.json``'s ``game`` (computed
    by ``game.statistics`` from these files) and, with ``dp``, its ``dp`` section."""
    from rcig_release.audits import game
    from rcig_release.audits.config import AuditConfig, to_dict
    from rcig_release.audits.outputs import write_json, write_npz
    from rcig_release.audits.runner import sample_records
    from rcig_release.release import recompute

    cfg = AuditConfig(shadows=shadows, seed=seed)
    y_train, y_test = np.asarray(data.y_train), np.asarray(data.y_test)
    idx = np.asarray(init_indices, np.int64)
    rec = sample_records(y_train, len(y_test), cfg, idx)
    mem, non = np.asarray(rec["members"]), np.asarray(rec["nonmembers"])
    n = len(mem) + len(non)
    keep = game.draw_keep(shadows, n, seed)
    init = np.concatenate([np.isin(mem, idx[idx >= 0]), np.zeros(len(non), bool)])
    leaking = init.copy() if leak_records is None else np.arange(n) < leak_records
    rng = np.random.default_rng([seed, 99])
    scores = {}
    for a in ATTACKS + ("nearest_feature",):
        s = rng.standard_normal((shadows, n))
        if a.startswith("nearest"):
            s[:, leaking] += shift * keep[:, leaking]
        scores[a] = s
    audit_dir.mkdir(parents=True, exist_ok=True)
    write_json(audit_dir / "records.json", rec)
    buf = io.BytesIO()
    np.save(buf, keep)
    (audit_dir / "keep.npy").write_bytes(buf.getvalue())
    write_json(audit_dir / "audit_config.json", to_dict(cfg))
    write_npz(audit_dir / "game_scores.npz", {"keep": keep, **scores})
    # game.statistics and dpcheck.dp_section through recompute (memoised: tests build the same
    # game many times, and the release then recomputes it)
    res = recompute.recompute(
        recompute.GameInputs(
            scores=scores,
            keep=keep,
            record_class=np.concatenate([y_train[mem], y_test[non]]),
            init=init,
            n_classes=n_classes,
            delta=cfg.delta,
            alpha=cfg.epsilon_alpha,
            seed=seed,
        ),
        init_mode="real" if init.any() else "noise",
        run_dp=dp,
    )
    stats = res["game"]
    stats["rounds"] = [
        {"targets": t.tolist(), "references": r.tolist()} for t, r in game.folds(shadows)
    ]
    return stats, res.get("dp")


def audit_dict(
    run_sha: str,
    images: np.ndarray,
    private: np.ndarray,
    *,
    leak: bool,
    classes: tuple[str, ...] = CLASSES,
) -> dict:
    from rcig_release.audits.config import AuditConfig, to_dict

    d_train = nearest_distances(images, private)
    threshold = 0.05
    per_image = [
        {
            "nearest_train_distance": float(d),
            "nearest_test_distance": float(d) + 0.2,
            "ratio": float(d / (d + 0.2)),
            "near_copy": bool(d <= threshold),
        }
        for d in d_train
    ]
    attacks = {}
    for a in ATTACKS:
        m = copy.deepcopy(CLEAN)
        m["groups"] = {
            "all": copy.deepcopy(CLEAN),
            "init": copy.deepcopy(LEAK if leak and a == "nearest" else CLEAN),
        }
        for i, _ in enumerate(classes):
            m["groups"][f"class_{i}"] = copy.deepcopy(CLEAN)
        attacks[a] = m
    if leak:
        attacks["nearest"].update({k: v for k, v in metrics(0.56, 0.02, 0.06, 2.5).items()})
    return {
        "run_sha256": run_sha,
        "attacks": attacks,
        "copy_check": {
            "near_copies": int(sum(r["near_copy"] for r in per_image)),
            "threshold": threshold,
            "metric": "rms_pixel",
            "per_image": per_image,
        },
        "baselines": {
            "naive_release": {
                "attacks": {a: metrics(0.6, 0.05, 0.2, 2.0) for a in ATTACKS},
                "accuracy": 0.55,
            },
            "real_model": {
                "attacks": {a: metrics(0.7, 0.08, 0.3, 3.0) for a in ATTACKS},
                "accuracy": 0.97,
            },
        },
        "config": to_dict(AuditConfig()),
        "n_shadows": 16,
        "game": copy.deepcopy(simulated_game(leak)),
        "init": {
            "mode": "real" if leak else "noise",
            "n_init_records": 10 if leak else 0,
            "init_aware_shadows": leak,
        },
    }


#: with ``fake_run(dp_game_leak=True)``: the release-direct attacks rank first the IN guesses of
#: this many records (a noise-initialised DP run has no init group to leak through). Every record:
#: at δ = 1e-5 and these sizes (about 1,600 IN guesses per fold) only a perfect attack on every
#: guess shows a bound (0.57) above a small proven ε; a leak of 100 records shows 0.
DP_LEAK_RECORDS = 1_000_000


def audit_records(run: Path) -> dict:
    return json.loads((Path(run) / "audit" / "records.json").read_text())


def to_runner_layout(audit: dict) -> dict:
    """The same audit in the layout audits/runner.py writes: baselines ``naive``/``full_data`` with
    ``targets.test_accuracy_mean``, the release's own ``targets``, ``per_image`` as columns."""
    a = copy.deepcopy(audit)
    naive, real = a["baselines"].pop("naive_release"), a["baselines"].pop("real_model")
    a["baselines"] = {
        "naive": {
            "attacks": naive["attacks"],
            "targets": {"test_accuracy_mean": naive["accuracy"]},
        },
        "full_data": {
            "attacks": real["attacks"],
            "targets": {"test_accuracy_mean": real["accuracy"]},
        },
    }
    a["targets"] = {"n_models": 4, "test_accuracy_mean": 0.78, "test_accuracy_std": 0.01}
    rows = a["copy_check"].pop("per_image")
    a["copy_check"]["per_image"] = {
        "nearest_train_l2": [r["nearest_train_distance"] for r in rows],
        "nearest_holdout_l2": [r["nearest_test_distance"] for r in rows],
        "ratio": [r["ratio"] for r in rows],
        "near_copy": [r["near_copy"] for r in rows],
    }
    a["copy_check"].pop("metric")
    a["copy_check"]["distance"] = "normalised pixel L2 (RMS difference, images in [0,1])"
    a["run"] = "run"
    return a


def fake_run(
    root: Path,
    *,
    leak: bool = False,
    data: types.SimpleNamespace | None = None,
    ipc: int = 2,
    with_roc: bool = False,
    with_scores: bool = False,
    runner_layout: bool = False,
    classes: tuple[str, ...] = CLASSES,
    dp: dict | None = None,
    dp_game_leak: bool = False,
) -> Path:
    """Writes a complete synthetic run directory under ``root`` and returns its path (``classes``:
    the class names in distilled.npz; image ``k*ipc .. k*ipc+ipc-1`` has class ``k``). The audit
    directory holds the raw files the release recomputes the game from (``write_game_files``:
    with ``leak`` the release-direct attacks find the init records) and ``audit.json`` with the
    game computed from them. ``dp``: a run.json ``dp`` statement (``dp_statement``); the audit
    then gets the ``dp`` section the audit computes on that game (``dp_game_leak``: a leak of
    ``DP_LEAK_RECORDS`` records, a dp-violation for a small proven ε)."""
    data = data or private_data()
    run = Path(root)
    (run / "audit").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    n, c = ipc * len(classes), len(classes)
    if leak:  # the init records distill draws for this config (run.json below)
        init = drawn_init(data, ipc, c, RUN_SEED)
        images = data.x_train[init].copy()
    else:
        init = np.full(n, -1)
        # smooth images: far (in RMS) from uniform-noise private images
        images = np.clip(
            0.5 + 0.1 * rng.standard_normal((n, *data.x_train.shape[1:])), 0, 1
        ).astype(np.float32)
    cls = np.repeat(np.arange(c), ipc)
    labels = np.full((n, c), 0.1, np.float32)
    labels[np.arange(n), cls] = 0.8
    np.savez(
        run / "distilled.npz",
        images=images,
        labels=labels,
        classes=np.array(classes, dtype=str),
        images_model=images - 0.5,
        log_temp=np.float32(0.0),
        init_indices=init.astype(np.int64),
        prep_mean=np.zeros(1, np.float32),
        prep_std=np.ones(1, np.float32),
    )
    run_json = {
        "config": {
            "ipc": ipc,
            "steps": 0 if leak else 200,
            "init": "real" if leak else "noise",
            "seed": RUN_SEED,
        },
        "data": {
            "source": str(Path(root).resolve() / "private" / "secret.npz"),
            "fingerprint": data.fingerprint,
            "split_seed": 7,
            "n_train": int(len(data.x_train)),
            "n_test": int(len(data.x_test)),
        },
        "init": {"mode": "real" if leak else "noise", "indices": init.tolist()},
        "versions": {"jax": "0.10.0"},
        "device": "cpu",
        "timings": {"total_s": 1.0},
        "metrics": {},
    }
    if dp is not None:
        run_json["dp"] = dp
    (run / "run.json").write_text(json.dumps(run_json))
    eval_json = {
        "arch": "convnet",
        "models": 5,
        "width": 32,
        "steps": 300,
        "accuracy_mean": 0.56 if leak else 0.80,
        "accuracy_std": 0.02,
        "accuracies": [0.8] * 5,
        "augment": False,
    }
    (run / "eval.json").write_text(json.dumps(eval_json))
    audit = audit_dict(
        file_sha256(run / "distilled.npz"), images, data.x_train, leak=leak, classes=classes
    )
    audit["run_json_sha256"] = file_sha256(run / "run.json")
    # the game as the audit computes it from its raw files (which release recomputes it from)
    audit["game"], section = write_game_files(
        run / "audit",
        data,
        init,
        len(classes),
        leak_records=DP_LEAK_RECORDS if dp_game_leak else None,
        dp=dp,
    )
    n_init = int(np.isin(audit_records(run)["members"], init[init >= 0]).sum())
    audit["init"].update(n_init_records=n_init, init_aware_shadows=bool(leak and n_init))
    if dp is not None:
        audit["dp"] = section
    if runner_layout:
        audit = to_runner_layout(audit)
    (run / "audit" / "audit.json").write_text(json.dumps(audit))
    if with_roc:
        from rcig_release.release.figures import roc_png

        (run / "audit" / "roc.png").write_bytes(roc_png(audit, None))
    if with_scores:
        member = np.arange(40) % 2 == 0
        prefix = "release__" if runner_layout else ""
        extra = (
            {"record_index": np.arange(40), "naive__loss": rng.standard_normal(40)}
            if runner_layout
            else {}
        )
        np.savez(
            run / "audit" / "scores.npz",
            member=member,
            **extra,  # type: ignore[arg-type]
            **{prefix + a: rng.standard_normal(40) + member for a in ATTACKS},
        )
    return run


def displaced(x: np.ndarray, rms: float, rng: np.random.Generator) -> np.ndarray:
    """Each image plus Gaussian noise, rescaled until the published (8-bit, clipped) image is at RMS
    distance ``rms`` (+-0.002) from the original (a memorised record, barely moved)."""
    out = np.empty_like(x)
    for k, img in enumerate(x):
        scale = rms
        for _ in range(50):
            y = np.round(np.clip(img + scale * rng.standard_normal(img.shape), 0, 1) * 255) / 255
            d = np.sqrt(((y - img) ** 2).mean())
            if abs(d - rms) < 0.002:
                break
            scale *= rms / max(d, 1e-3)
        if abs(d - rms) >= 0.002:
            raise ValueError(f"could not place image {k} at RMS {rms}")
        out[k] = y
    return out


def rebind_audit(run: Path) -> None:
    """Records the current RUN/run.json and RUN/distilled.npz in RUN/audit/audit.json, as a new
    audit of the edited run would (tests that edit a fake run before releasing it)."""
    path = Path(run) / "audit" / "audit.json"
    audit = json.loads(path.read_text())
    audit["run_sha256"] = file_sha256(Path(run) / "distilled.npz")
    audit["run_json_sha256"] = file_sha256(Path(run) / "run.json")
    path.write_text(json.dumps(audit))
