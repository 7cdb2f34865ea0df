"""The audit as one library call: ``run_audit(run_dir, AuditConfig) -> summary dict``.

Recipe (docs/audit.md): load the run and its data (fingerprint-checked) → sample audit records
(indices only) → keep matrix → target networks on the release → shadow pipelines → attacks →
metrics per attack and risk group → copy check → the same for the baselines → files in
``RUN/audit/``. Scores: higher = more likely member. No private image is written (indices only),
except into an explicit ``private_gallery`` outside the run directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rcig_release.audits import copycheck, dpcheck, executors, game, outputs, shadows
from rcig_release.audits.config import AuditConfig, to_dict, validate
from rcig_release.audits.metrics import release_metrics
from rcig_release.audits.scoring import score_targets
from rcig_release.errors import InputError
from rcig_release.initsets import AGGREGATE_MODES
from rcig_release.release import precheck

Progress = Callable[..., None]  # progress(stage, done, total[, eta=seconds]): audits/eta.py
AUDIT_DIR = "audit"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_data(run: Any, data: Any = None) -> Any:
    """The run's data, reloaded from run.json's source or from ``data`` (a spec or a Dataset);
    refused when the fingerprint differs from the run's."""
    from rcig_release.data import load_dataset

    meta = run.run_json.get("data", {})
    want = meta.get("fingerprint")
    if data is None or isinstance(data, str):
        spec = data if data is not None else meta.get("source")
        if not spec:
            raise InputError("run.json names no data source; pass --data")
        seed = meta.get("split_seed")
        ds = load_dataset(spec, seed=0 if seed is None else int(seed))
    else:
        ds = data
    if want and ds.fingerprint != want:
        raise InputError(
            f"the data's fingerprint ({ds.fingerprint[:19]}…) differs from the run's "
            f"({want[:19]}…): not the data this run was distilled from"
        )
    return ds


def _prepare_dir(audit_dir: Path, cfg: AuditConfig, resume: bool) -> None:
    cfg_path = audit_dir / "audit_config.json"
    if audit_dir.exists() and any(audit_dir.iterdir()):
        if not resume:
            raise InputError(
                f"{audit_dir} exists; pass --resume to continue that audit, or move "
                "it away to start a new one"
            )
        if cfg_path.is_file():
            old = json.loads(cfg_path.read_text(encoding="utf-8"))
            new = json.loads(json.dumps(to_dict(cfg)))
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                raise InputError(
                    f"--resume with a different audit configuration (differs in: {', '.join(diff)})"
                )
    audit_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_json(cfg_path, to_dict(cfg))


def sample_records(
    y_train: np.ndarray, n_test: int, cfg: AuditConfig, must_include: np.ndarray
) -> dict[str, list[int]]:
    """Balanced members (training split; ``must_include`` — the init images — always among them)
    and non-members (held-out split), plus RMIA population from the rest of the held-out split."""
    rng = np.random.default_rng([cfg.seed, 1])
    n_train = len(y_train)
    forced = np.unique(must_include[must_include >= 0])
    n = min(cfg.records, n_train, n_test // 2)  # the other half of the held-out split: population
    n_mem = min(n_train, max(n, len(forced)))
    others = rng.permutation(np.setdiff1d(np.arange(n_train), forced))
    members = np.sort(np.concatenate([forced, others[: max(0, n_mem - len(forced))]]))
    test_perm = rng.permutation(n_test)
    nonmembers = np.sort(test_perm[:n])
    population = np.sort(test_perm[n : n + cfg.population])
    if len(population) == 0:
        raise InputError("the held-out split is too small for audit records and RMIA's population")
    # half of the non-members only place the release report's thresholds (never evaluated)
    calibration = np.sort(rng.permutation(nonmembers)[: len(nonmembers) // 2])
    return {
        "members": members.tolist(),
        "nonmembers": nonmembers.tolist(),
        "population": population.tolist(),
        "init_records": forced.tolist(),
        "calibration": calibration.tolist(),
    }


def _load_or_make(
    audit_dir: Path, make_records: Callable[[], dict], cfg: AuditConfig, resume: bool
) -> tuple[dict, np.ndarray]:
    rec_path, keep_path = audit_dir / "records.json", audit_dir / "keep.npy"
    if resume and rec_path.is_file() and keep_path.is_file():
        return json.loads(rec_path.read_text(encoding="utf-8")), np.load(keep_path)
    rec = make_records()
    n = len(rec["members"]) + len(rec["nonmembers"])
    keep = game.draw_keep(cfg.shadows, n, cfg.seed)
    outputs.write_json(rec_path, rec)
    buf_path = keep_path
    import io

    buf = io.BytesIO()
    np.save(buf, keep)
    outputs.atomic_write_bytes(buf_path, buf.getvalue())
    return rec, keep


def _target(
    support: tuple[np.ndarray, np.ndarray],
    prep: Any,
    loss: str,
    ds: shadows.Downstream,
    queries_pix: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    key: Any,
    mirror: bool,
) -> tuple[Any, np.ndarray, dict]:
    params = shadows.train_sets([support], ds, num_classes, [key], loss=loss)[0]
    z = shadows.logits_on(
        params, ds, shadows.mirror_queries(prep.transform(queries_pix), mirror), num_classes
    )
    test = shadows.logits_on(params, ds, prep.transform(x_test)[None], num_classes)[:, 0]
    acc = np.mean(np.argmax(test, -1) == np.asarray(y_test)[None], axis=-1)
    steps = ds.steps_for(len(support[0]), loss)
    return (
        params,
        z,
        {
            "n_models": int(ds.n_models),
            "train_steps": steps,
            "lr": float(ds.lr),
            "test_accuracy_mean": float(acc.mean()),
            "test_accuracy_std": float(acc.std()),
            "n_train_images": int(len(support[0])),
        },
    )


BASELINES_JSON = "baselines.json"
# the audit settings that shape the naive and full-data baseline pipelines
_BASELINE_FIELDS = (
    "shadows",
    "records",
    "population",
    "seed",
    "targets",
    "arch",
    "width",
    "train_steps",
    "lr",
    "warmup",
    "batch",
    "full_steps",
    "full_lr",
    "full_warmup",
    "full_models",
    "mirror",
)


def _sha(a: Any) -> str:
    return hashlib.sha256(json.dumps(a, sort_keys=True).encode()).hexdigest()


def baseline_signature(
    fingerprint: str,
    rec: dict,
    keep: np.ndarray,
    naive_idx: np.ndarray,
    cfg: AuditConfig,
    run: Any,
    down: Any,
) -> dict[str, Any]:
    """What the naive and full-data baseline pipelines are a function of: the data, the records,
    the inclusion matrix, the naive set's init images, the downstream training and the run
    settings the pipelines read (not the release itself). Written to ``baselines.json``; two
    audits with equal signatures have the same baseline shadows (``--baselines-from``)."""
    c = run.config
    audit = to_dict(cfg)
    return {
        "data_fingerprint": fingerprint,
        "records_sha256": _sha({k: rec[k] for k in ("members", "nonmembers", "population")}),
        "keep_sha256": hashlib.sha256(np.ascontiguousarray(keep, np.bool_).tobytes()).hexdigest()
        + f":{keep.shape[0]}x{keep.shape[1]}",
        "naive_init_sha256": _sha(np.asarray(naive_idx, np.int64).tolist()),
        "audit_settings": {k: audit.get(k) for k in _BASELINE_FIELDS},
        "run_settings": {
            "ipc": c.ipc,
            "zca": c.zca,
            "zca_reg": c.zca_reg,
            "use_flip": c.use_flip,
            "width": c.width,
            "depth": c.depth,
            "dp": c.dp_epsilon is not None,
        },
        "downstream_flip": bool(down.flip),
    }


def reuse_baselines(other: Path, audit_dir: Path, signature: dict[str, Any]) -> None:
    """Copies the naive and full-data shadow files of ``other``'s audit into this audit
    (atomically, each checked against its keep row), after checking that its baseline signature
    is this audit's; a difference is one line naming it (exit 2)."""
    path = other / AUDIT_DIR / BASELINES_JSON
    if not path.is_file():
        raise InputError(f"--baselines-from {other}: no audit with {BASELINES_JSON} there")
    try:
        theirs = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise InputError(f"--baselines-from {other}: {path.name} is unreadable") from None
    names = {
        "data_fingerprint": "data fingerprint",
        "records_sha256": "records",
        "keep_sha256": "inclusion matrix",
        "naive_init_sha256": "naive baseline's init images",
        "audit_settings": "audit settings",
        "run_settings": "run settings",
        "downstream_flip": "flips of the downstream sets",
    }
    diff = [names.get(k, k) for k in names if theirs.get(k) != signature.get(k)]
    if isinstance(theirs.get("audit_settings"), dict):
        diff = [
            d
            if d != "audit settings"
            else "audit settings ("
            + ", ".join(
                k
                for k in _BASELINE_FIELDS
                if theirs["audit_settings"].get(k) != signature["audit_settings"].get(k)
            )
            + ")"
            for d in diff
        ]
    if diff:
        raise InputError(
            f"--baselines-from {other}: its baselines do not fit this audit (differs in: "
            f"{', '.join(diff)})"
        )
    keep = np.load(audit_dir / "keep.npy")
    for sub in ("shadows_naive", "shadows_full"):
        src, dst = other / AUDIT_DIR / sub, audit_dir / sub
        if not src.is_dir():
            continue
        for k in range(keep.shape[0]):
            f = src / f"{k}.npz"
            if (dst / f"{k}.npz").is_file() or not shadows.valid(f, keep[k], sub != "shadows_full"):
                continue
            outputs.atomic_write_bytes(dst / f"{k}.npz", f.read_bytes())


def shadow_config(run: Any, cfg: AuditConfig) -> Any:
    """The ``DistillConfig`` the release shadows run. With ``shadow_lrs="run"`` and a run that
    tuned its learning rates, the shadows start from the run's tuned inner/HVP rates instead of
    re-tuning (the online adaptation still runs): the tuning is a hyperparameter search the
    adversary can replicate once, and skipping it saves its cost in every shadow."""
    tuned = run.run_json.get("tuning") or {}
    if cfg.shadow_lrs != "run" or not run.config.tune_lr or "inner_lr" not in tuned:
        return run.config
    return run.config.replace(
        tune_lr=False, inner_lr=float(tuned["inner_lr"]), hvp_lr=float(tuned["hvp_lr"])
    )


def run_audit(
    run_dir: str | Path,
    cfg: AuditConfig = AuditConfig(),
    *,
    data: Any = None,
    resume: bool = False,
    private_gallery: str | Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    stop_if_unreleasable: bool = False,
    executor: executors.Executor | None = None,
    baselines_from: str | Path | None = None,
) -> dict[str, Any]:
    """Audits a distillation run; writes ``RUN/audit/`` and returns ``audit.json``'s content.

    ``progress(stage, done, total)``: called as each stage moves (``"targets"``, a pipeline
    kind, ``"attacks"``, ``"done"``; on Ray also ``"KIND: R running, Q queued"``). A callback
    that takes the keyword ``eta`` also gets the stage's estimated seconds left, from measured
    step and pipeline times, and (local executor) an event at every distillation step and
    phase of each pipeline, ``"KIND: shadow K: distill step T/S"`` (audits/eta.py). It changes
    nothing the audit computes or writes.
    ``executor``: where the shadow pipelines run (audits/executors.py; default: here, one after
    the other); ``workers`` N > 1: a local Ray cluster of N CPUs (``executors.for_workers``).
    Execution settings, not part of the audit configuration: a resumed audit may use others, and
    audit.json is the same whichever ran it (its ``timings`` aside, which also name the executor).
    ``baselines_from``: another run directory whose audit of the same data already ran the naive
    and full-data baseline pipelines; its shadow files are reused when the data fingerprint, the
    records, the inclusion matrix and the baselines' settings match (``baseline_signature``).
    Before any shadow, the release's memorisation check runs on the run's images
    (``release.precheck``; its outcome, counts only, is ``audit.json``'s
    ``memorisation_precheck``); with ``stop_if_unreleasable`` (the CLI's default, ``--force``
    turns it off) a set it flags stops the audit there (``WouldBeRefused``, exit 3), nothing
    written: no audit can make release publish it.

    Raises:
      InputError: unreadable run, data whose fingerprint differs, an existing audit without
        ``resume``, a different configuration on ``resume``, a bad gallery directory, Ray asked
        for and not installed, baselines that do not match.
    """
    validate(cfg)
    execu = executors.for_workers(workers, executor or executors.Executor())
    execu.check()
    session = executors.RaySession(execu) if execu.kind == "ray" else None
    try:
        return _run_audit(
            run_dir,
            cfg,
            data=data,
            resume=resume,
            private_gallery=private_gallery,
            progress=progress,
            session=session,
            baselines_from=baselines_from,
            stop_if_unreleasable=stop_if_unreleasable,
        )
    finally:
        if session is not None:
            session.close()


def _run_audit(
    run_dir: str | Path,
    cfg: AuditConfig,
    *,
    data: Any,
    resume: bool,
    private_gallery: str | Path | None,
    progress: Progress | None,
    session: executors.RaySession | None,
    baselines_from: str | Path | None,
    stop_if_unreleasable: bool,
) -> dict[str, Any]:
    import jax

    from rcig_release.config import resolve
    from rcig_release.distill import initial_set
    from rcig_release.rundir import DISTILLED, RUN_JSON, load_run

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    run = load_run(run_dir)
    # what this audit certifies: release refuses a run.json or distilled.npz changed since
    audited = {
        "run_sha256": sha256_file(run.path / DISTILLED),
        "run_json_sha256": sha256_file(run.path / RUN_JSON),
    }
    if run.run_json.get("dp") is not None:  # a malformed DP statement fails before any work
        from rcig_release.release.dp import validate_dp

        validate_dp(run.run_json["dp"], "run.json dp")
    ds_data = load_data(run, data)
    from rcig_release.config import check_image_side  # the shadows distil with this ConvNet

    shape = tuple(ds_data.x_train.shape[1:])
    check_image_side(shape, "convnet", resolve(run.config, shape, run.num_classes).depth, "RUN")
    audit_dir = run.path / AUDIT_DIR
    if private_gallery is not None:  # check before any work
        outputs.check_gallery(Path(private_gallery), run.path)
    pre = precheck.precheck_arrays(
        run.images, ds_data, run.init_indices, run.run_json, run.num_classes
    )
    if stop_if_unreleasable:
        precheck.require_releasable(pre)
    _prepare_dir(audit_dir, cfg, resume)
    say = progress or (lambda stage, done, total: None)

    C = run.num_classes
    x_tr, y_tr = ds_data.x_train, np.asarray(ds_data.y_train, np.int64)
    x_te, y_te = ds_data.x_test, np.asarray(ds_data.y_test, np.int64)
    res = resolve(run.config, tuple(x_tr.shape[1:]), C)
    prep = run.preprocessor
    width = cfg.width or run.config.width
    down = shadows.Downstream(
        arch=cfg.arch,
        width=width,
        depth=run.config.depth,
        n_models=cfg.targets,
        steps=cfg.train_steps,
        lr=cfg.lr,
        warmup=cfg.warmup,
        batch=cfg.batch,
        flip=res.use_flip,
    )
    naive_cfg = run.config.replace(steps=0, init="real")
    naive_x, naive_lab, naive_idx = initial_set(naive_cfg, prep.transform(x_tr), y_tr, C)
    run_init = np.asarray(run.init_indices, np.int64)
    want_naive = "naive" in cfg.baselines
    forced = np.concatenate([run_init, naive_idx if want_naive else np.zeros(0, np.int64)])

    rec, keep = _load_or_make(
        audit_dir, lambda: sample_records(y_tr, len(x_te), cfg, forced), cfg, resume
    )
    mem, non, pop = (np.asarray(rec[k], np.int64) for k in ("members", "nonmembers", "population"))
    n_rec = len(mem) + len(non)
    member = np.concatenate([np.ones(len(mem), bool), np.zeros(len(non), bool)])
    calib = np.concatenate(
        [np.zeros(len(mem), bool), np.isin(non, np.asarray(rec.get("calibration", []), np.int64))]
    )
    q_pix = np.concatenate([x_tr[mem], x_te[non], x_te[pop]])
    y_q = np.concatenate([y_tr[mem], y_te[non], y_te[pop]])
    rec_pix = q_pix[:n_rec]
    classes_rec = y_q[:n_rec]

    def groups_for(init_idx: np.ndarray, *, game_groups: bool) -> dict[str, np.ndarray]:
        ii = np.isin(mem, init_idx[init_idx >= 0])
        init = np.concatenate([ii, np.zeros(len(non), bool)])
        return game.record_groups(classes_rec, init, C, with_all=game_groups)

    base_key = jax.random.key(cfg.seed)
    private = shadows.ShadowData(
        x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, queries_pix=q_pix
    )

    def shadow_job(
        kind: str,
        pipeline_cfg: Any,
        ds: shadows.Downstream = down,
        init_records: np.ndarray | None = None,
    ) -> shadows.ShadowJob:
        return shadows.ShadowJob(
            kind=kind,
            cfg=pipeline_cfg,
            keep=keep,
            members=mem,
            nonmembers=non,
            num_classes=C,
            zca=res.zca,
            ds=ds,
            seed=cfg.seed,
            mirror=cfg.mirror,
            init_records=init_records,
        )

    how: dict[str, Any] = dict(  # where and how the pipelines run
        group=cfg.shadow_group, executor=session, progress=say
    )
    signature = baseline_signature(ds_data.fingerprint, rec, keep, naive_idx, cfg, run, down)
    outputs.write_json(audit_dir / BASELINES_JSON, signature)
    if baselines_from is not None:
        reuse_baselines(Path(baselines_from), audit_dir, signature)
    reused = resume or baselines_from is not None  # keep the valid baseline files found

    pipelines: dict[str, dict[str, Any]] = {}
    # --- the release -------------------------------------------------------------------------
    t = time.perf_counter()
    say("targets", 0, 1)
    params, tl, tinfo = _target(
        (run.images_model, run.labels),
        prep,
        "mse",
        down,
        q_pix,
        x_te,
        y_te,
        C,
        jax.random.fold_in(base_key, 1),
        cfg.mirror,
    )
    near = (
        shadows.nearest_distances(params, down, prep, rec_pix, run.images_model, C)
        if "nearest" in cfg.attacks
        else None
    )
    timings["targets"] = time.perf_counter() - t
    t = time.perf_counter()
    run_init_records = run_init[run_init >= 0] if run.config.init == "real" else None
    sl, snear = shadows.run_shadows(
        shadow_job("release", shadow_config(run, cfg), init_records=run_init_records),
        private,
        out_dir=audit_dir / "shadows",
        resume=resume,
        **how,
    )
    timings["shadows"] = time.perf_counter() - t
    pipelines["release"] = dict(tl=tl, sl=sl, near=near, snear=snear, targets=tinfo, init=run_init)

    # --- baselines ---------------------------------------------------------------------------
    if want_naive:
        t = time.perf_counter()
        naive_pix = x_tr[naive_idx]
        p2, tl2, ti2 = _target(
            (naive_x, naive_lab),
            prep,
            "mse",
            down,
            q_pix,
            x_te,
            y_te,
            C,
            jax.random.fold_in(base_key, 2),
            cfg.mirror,
        )
        near2 = (
            shadows.nearest_distances(p2, down, prep, rec_pix, naive_x, C)
            if "nearest" in cfg.attacks
            else None
        )
        del naive_pix
        sl2, snear2 = shadows.run_shadows(
            shadow_job("naive", run.config, init_records=naive_idx),
            private,
            out_dir=audit_dir / "shadows_naive",
            resume=reused,
            **how,
        )
        pipelines["naive"] = dict(
            tl=tl2, sl=sl2, near=near2, snear=snear2, targets=ti2, init=naive_idx
        )
        timings["baseline_naive"] = time.perf_counter() - t
    if "full_data" in cfg.baselines:
        t = time.perf_counter()
        # a released model is one network: full_models per target set and per shadow, trained
        # with the ordinary supervised recipe (full_steps/full_lr), not the distilled-set protocol
        down_full = dataclasses.replace(
            down,
            n_models=cfg.full_models,
            steps=cfg.full_steps,
            lr=cfg.full_lr,
            warmup=cfg.full_warmup,
        )
        p3, tl3, ti3 = _target(
            (prep.transform(x_tr), y_tr),
            prep,
            "ce",
            down_full,
            q_pix,
            x_te,
            y_te,
            C,
            jax.random.fold_in(base_key, 3),
            cfg.mirror,
        )
        sl3, _ = shadows.run_shadows(
            shadow_job("full", run.config, ds=down_full),
            private,
            out_dir=audit_dir / "shadows_full",
            resume=reused,
            **how,
        )
        pipelines["full_data"] = dict(
            tl=tl3, sl=sl3, near=None, snear=None, targets=ti3, init=np.zeros(0, np.int64)
        )
        timings["baseline_full_data"] = time.perf_counter() - t

    # --- attacks: the game (every shadow a target) and this release -------------------------
    t = time.perf_counter()
    say("attacks", 0, len(pipelines))
    all_scores: dict[str, dict[str, np.ndarray]] = {}
    results: dict[str, dict[str, Any]] = {}
    dp_audit: dict[str, Any] | None = None
    for i, (name, p) in enumerate(pipelines.items()):
        names = tuple(a for a in cfg.attacks if not (a == "nearest" and p["near"] is None))
        gsc, ginfo = game.play(
            names,
            p["sl"],
            p["snear"],
            keep,
            y_q,
            n_rec,
            rmia_a=cfg.rmia_a,
            rmia_gamma=cfg.rmia_gamma,
            seed=cfg.seed,
        )
        gstats = game.statistics(
            gsc,
            keep,
            groups_for(p["init"], game_groups=True),
            delta=cfg.delta,
            alpha=cfg.epsilon_alpha,
        )
        near1 = None if p["near"] is None else {k: v[None] for k, v in p["near"].items()}
        sc, info = score_targets(
            names,
            p["tl"][None],
            near1,
            p["sl"],
            keep,
            y_q,
            n_rec,
            rmia_a=cfg.rmia_a,
            rmia_gamma=cfg.rmia_gamma,
            seed=cfg.seed,
        )
        sc = {k: v[0] for k, v in sc.items()}
        all_scores[name] = sc
        groups = groups_for(p["init"], game_groups=False)
        results[name] = {
            "attacks": {a: release_metrics(s, member, calib, groups) for a, s in sc.items()},
            "targets": p["targets"],
            "lira_variance": info.get("lira_variance"),
            "rmia_a": info.get("rmia_a"),
            "game": {**gstats, "rounds": ginfo["folds"]},
            "attack_seconds": info["attack_seconds"] + ginfo["attack_seconds"],
        }
        if name == "release":
            # float64, the values the statistics were computed from: the release recomputes
            # every statistic from this file (rcig_release.release.recompute); float32 rounding
            # could tie scores the statistics saw as distinct
            outputs.write_npz(
                audit_dir / "game_scores.npz",
                {"keep": keep, **{k: np.asarray(v, np.float64) for k, v in gsc.items()}},
            )
            if run.run_json.get("dp") is not None:  # a DP run: empirical ε LB against the proven ε
                dp_audit = dpcheck.dp_section(
                    run.run_json["dp"],
                    gsc,
                    keep,
                    groups_for(p["init"], game_groups=True),
                    alpha=cfg.epsilon_alpha,
                )
        say("attacks", i + 1, len(pipelines))
    timings["attacks"] = time.perf_counter() - t

    # --- copy check (information; the release recomputes its own memorisation check) --------
    t = time.perf_counter()
    has_init = run_init >= 0
    cc = copycheck.copy_check(
        run.images,
        x_tr,
        x_te,
        init_indices=run_init if has_init.any() else None,
        percentile=cfg.copy_percentile,
        seed=cfg.seed,
    )
    if want_naive:
        cc_naive = copycheck.copy_check(
            x_tr[naive_idx], x_tr, x_te, threshold=cc["threshold"], init_indices=naive_idx
        )
        results["naive"]["copy_check"] = {
            k: cc_naive[k]
            for k in ("near_copies", "threshold", "median_ratio", "closer_to_train_fraction")
        }
    timings["copy_check"] = time.perf_counter() - t

    # --- files -------------------------------------------------------------------------------
    arrays: dict[str, np.ndarray] = {
        "member": member,
        "calibration": calib,
        "record_index": np.concatenate([mem, non]),
        "record_split": np.concatenate([np.zeros(len(mem), np.int8), np.ones(len(non), np.int8)]),
    }
    for pipe, sc in all_scores.items():
        for name, s in sc.items():
            arrays[f"{pipe}__{name}"] = np.asarray(s, np.float64)
    outputs.write_npz(audit_dir / "scores.npz", arrays)
    outputs.plot_roc(audit_dir / "roc.png", all_scores, member)
    outputs.plot_histograms(audit_dir / "histograms.png", all_scores["release"], member)
    gallery_n = None
    if private_gallery is not None:
        gallery_n = outputs.write_private_gallery(
            Path(private_gallery), run.path, run.images, x_tr, cc["per_image"]
        )
    timings["total"] = time.perf_counter() - t0

    rel = results["release"]
    n_init = int(np.isin(mem, run_init[run_init >= 0]).sum())
    summary: dict[str, Any] = {
        **audited,
        "run": run.path.name,
        "data": {
            "source_fingerprint": ds_data.fingerprint,
            "n_train": int(len(x_tr)),
            "n_test": int(len(x_te)),
        },
        "config": to_dict(cfg),
        "seeds": {
            "audit": cfg.seed,
            "run": run.config.seed,
            "shadow_distill": [cfg.seed * 1000 + k for k in range(cfg.shadows)],
        },
        "n_shadows": int(cfg.shadows),
        "downstream": {
            "arch": down.arch,
            "width": down.width,
            "n_models": down.n_models,
            "steps": down.steps,
            "lr": down.lr,
            "warmup": down.warmup,
            "batch": down.batch,
        },
        "init": {
            "mode": run.config.init,
            "n_init_records": n_init,
            "init_aware_shadows": bool(run.config.init == "real" and n_init > 0),
            # aggregate inits: each shadow averages its own private set (shadows.run_pipeline)
            "aggregate_shadows": run.config.init in AGGREGATE_MODES,
        },
        "memorisation_precheck": pre.to_json(),
        "records": {
            "members": int(len(mem)),
            "nonmembers": int(len(non)),
            "calibration": int(calib.sum()),
            "population": int(len(pop)),
            "file": "records.json",
        },
        "membership": {
            "draw": "independent fair coin per (record, shadow pipeline)",
            "file": "keep.npy",
            "seed": [cfg.seed, 2],
        },
        "game": rel["game"],
        **({"dp": dp_audit} if dp_audit is not None else {}),
        "targets": rel["targets"],
        "attacks": rel["attacks"],
        "lira_variance": rel.get("lira_variance"),
        "rmia_a": rel.get("rmia_a"),
        "copy_check": cc,
        "baselines": {k: v for k, v in results.items() if k != "release"},
        "timings": {**timings, "executor": "local" if session is None else "ray"},
        "outputs": [
            "audit.json",
            "scores.npz",
            "game_scores.npz",
            "roc.png",
            "histograms.png",
            "records.json",
            "keep.npy",
            "audit_config.json",
            BASELINES_JSON,
        ],
        **(
            {"baselines_from": str(Path(baselines_from).name)} if baselines_from is not None else {}
        ),
        "private_gallery_images": gallery_n,
    }
    from rcig_release.rundir import environment

    summary.update(environment())
    outputs.write_json(audit_dir / "audit.json", summary)
    say("done", 1, 1)
    return json.loads((audit_dir / "audit.json").read_text(encoding="utf-8"))
