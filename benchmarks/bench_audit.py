"""Audit benchmarks: downstream training vmapped vs a Python loop, and the audit's wall time.

    python benchmarks/bench_audit.py                       # both parts, digits
    python benchmarks/bench_audit.py --part vmap --models 16
    python benchmarks/bench_audit.py --part group --group 4 16
    python benchmarks/bench_audit.py --part audit --shadows 16 --distill-steps 300

The audit part distils digits with the CPU preset (``--distill-steps`` overrides its steps),
writes a run directory under a temporary folder (or ``--workdir``), audits it and prints the
phase timings and the headline table. Compile time is excluded from the vmap comparison (each
variant runs once to warm up), included in the audit time (it is part of what a user waits for).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402


def _warm_timings(**variants) -> dict:
    """Seconds of the second call of each variant (the first compiles)."""
    out = {}
    for name, fn in variants.items():
        fn()
        t = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t
    return out


def bench_vmap(models: int, steps: int, width: int, n_images: int) -> dict:
    import jax

    from rcig_release.data import fit_preprocessor, load_dataset
    from rcig_release.train import train_models

    ds = load_dataset("digits")
    prep = fit_preprocessor(ds.x_train, zca=False)
    x = prep.transform(ds.x_train[:n_images])
    y = ds.y_train[:n_images]
    kw = dict(
        num_classes=10,
        steps=steps,
        lr=1e-4,
        warmup=min(500, steps // 2),
        batch=256,
        width=width,
        loss="mse",
    )
    keys = jax.random.split(jax.random.key(0), models)

    def vmapped():
        return jax.block_until_ready(train_models("convnet", x, y, n_models=models, key=keys, **kw))

    def loop():
        return [
            jax.block_until_ready(
                train_models("convnet", x, y, n_models=1, key=keys[m : m + 1], **kw)
            )
            for m in range(models)
        ]

    out = _warm_timings(vmapped=vmapped, loop=loop)
    out["ratio"] = out["loop"] / out["vmapped"]
    out["models_per_s_vmapped"] = models / out["vmapped"]
    out["models_per_s_loop"] = models / out["loop"]
    return out


def bench_group(group: int, kind: str, n_models: int, steps: int | None) -> dict:
    """``group`` shadow pipelines' downstream networks in one vmapped ``train_sets`` call (each
    model on its own set) against one call per pipeline, as the audit's ``shadow_group`` chooses.
    ``kind``: "release" (10-image sets, MSE, the evaluate protocol) or "full" (a ~1437-image set,
    cross-entropy, the full-data recipe)."""
    import jax

    from rcig_release.audits.shadows import Downstream, train_sets
    from rcig_release.data import fit_preprocessor, load_dataset

    ds = load_dataset("digits")
    x = fit_preprocessor(ds.x_train, zca=False).transform(ds.x_train).astype(np.float32)
    rng = np.random.default_rng(0)
    sets = []
    for _ in range(group):
        if kind == "release":
            idx = np.concatenate(
                [rng.choice(np.flatnonzero(ds.y_train == c), 1) for c in range(10)]
            )
            sets.append((x[idx], (np.eye(10, dtype=np.float32) - 0.1)[ds.y_train[idx]]))
        else:
            idx = rng.permutation(len(x))
            sets.append((x[idx], ds.y_train[idx]))
    if kind == "release":
        down = Downstream(width=32, n_models=n_models, steps=steps)
    else:
        down = Downstream(width=32, n_models=n_models, steps=steps or 300, lr=2e-3, warmup=50)
    loss = "mse" if kind == "release" else "ce"
    keys = [jax.random.key(k) for k in range(group)]

    def grouped():
        return jax.block_until_ready(train_sets(sets, down, 10, keys, loss=loss))

    def per_pipeline():
        return [
            jax.block_until_ready(train_sets([s], down, 10, [k], loss=loss))
            for s, k in zip(sets, keys, strict=True)
        ]

    out = _warm_timings(grouped=grouped, per_pipeline=per_pipeline)
    out["ratio"] = out["per_pipeline"] / out["grouped"]
    return out


def make_digits_run(workdir: Path, steps: int, init: str) -> Path:
    from rcig_release.config import make_distill_config, resolve, to_dict, with_data_defaults
    from rcig_release.data import fit_preprocessor, load_dataset
    from rcig_release.distill import distill
    from rcig_release.rundir import write_distilled, write_json

    ds = load_dataset("digits")
    cfg = with_data_defaults(make_distill_config("cpu", steps=steps, init=init), len(ds.y_train))
    res_cfg = resolve(cfg, ds.image_shape, ds.num_classes)
    prep = fit_preprocessor(ds.x_train, zca=res_cfg.zca, zca_reg=cfg.zca_reg)
    t = time.perf_counter()
    res = distill(cfg, prep.transform(ds.x_train), ds.y_train, ds.num_classes)
    secs = time.perf_counter() - t
    run = workdir / f"run_{init}_{steps}"
    run.mkdir(parents=True, exist_ok=True)
    write_distilled(
        run,
        images=prep.inverse(res.images_model),
        labels=res.labels,
        classes=ds.classes,
        images_model=res.images_model,
        log_temp=res.log_temp,
        init_indices=res.init_indices,
        prep_arrays=prep.to_arrays(),
    )
    write_json(
        run / "run.json",
        {
            "config": to_dict(cfg),
            "data": {
                "source": "digits",
                "fingerprint": ds.fingerprint,
                "split_seed": ds.split_seed,
                "n_train": ds.n_train,
                "n_test": ds.n_test,
            },
            "init": {"mode": init, "indices": res.init_indices.tolist()},
            "timings": {"distill_seconds": secs},
        },
    )
    print(f"distilled digits ({steps} steps, init {init}) in {secs:.1f} s -> {run}")
    return run


def bench_audit(
    workdir: Path,
    shadows: int,
    targets: int,
    records: int,
    distill_steps: int,
    init: str,
    train_steps: int | None,
) -> dict:
    from rcig_release.audits import AuditConfig, run_audit

    run = make_digits_run(workdir, distill_steps, init)
    cfg = AuditConfig(shadows=shadows, targets=targets, records=records, train_steps=train_steps)
    t = time.perf_counter()
    out = run_audit(
        run,
        cfg,
        progress=lambda s, d, n: print(
            f"  {time.perf_counter() - t:8.1f} s  {s} {d}/{n}", flush=True
        ),
    )
    out["wall"] = time.perf_counter() - t
    return out


def _row(pipe: str, name: str, a: dict) -> str:
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    init = a.get("groups", {}).get("init", {}).get("tpr_at_fpr", {}).get("0.01")
    return (
        f"| {pipe} | {name} | {f(a['auc'])} | {f(a['tpr_at_fpr']['0.001'])} | "
        f"{f(a['tpr_at_fpr']['0.01'])} | {f(a['advantage'])} | {f(a['epsilon_lower_bound'])} "
        f"| {f(init)} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "vmap", "group", "audit"), default="all")
    p.add_argument("--models", type=int, default=16)
    p.add_argument("--group", type=int, nargs="+", default=[4, 16], help="pipelines per call")
    p.add_argument("--kind", nargs="+", default=["release", "full"], choices=("release", "full"))
    p.add_argument("--vmap-steps", type=int, default=300)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--shadows", type=int, default=16)
    p.add_argument("--targets", type=int, default=4)
    p.add_argument("--records", type=int, default=500)
    p.add_argument("--distill-steps", type=int, default=300)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--init", default="real", choices=("real", "noise"))
    p.add_argument("--workdir", type=Path, default=None)
    a = p.parse_args()
    if a.part in ("all", "vmap"):
        r = bench_vmap(a.models, a.vmap_steps, a.width, 10)
        print(
            f"\n| downstream training, {a.models} ConvNets (width {a.width}), 10 digits images, "
            f"{a.vmap_steps} steps | seconds | models/s |\n|---|---|---|"
        )
        print(f"| vmapped (one call) | {r['vmapped']:.2f} | {r['models_per_s_vmapped']:.2f} |")
        print(f"| Python loop | {r['loop']:.2f} | {r['models_per_s_loop']:.2f} |")
        print(f"| ratio loop/vmapped | {r['ratio']:.2f}x | |")
    if a.part == "group":
        print("\n| pipelines | kind | networks | grouped s | one call per pipeline s | ratio |")
        print("|---|---|---|---|---|---|")
        for kind in a.kind:
            m = a.targets if kind == "release" else 1
            for g in a.group:
                r = bench_group(g, kind, m, a.train_steps)
                print(
                    f"| {g} | {kind} | {g * m} | {r['grouped']:.2f} | {r['per_pipeline']:.2f} "
                    f"| {r['ratio']:.2f}x |",
                    flush=True,
                )
    if a.part in ("all", "audit"):
        work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_audit_"))
        out = bench_audit(
            work, a.shadows, a.targets, a.records, a.distill_steps, a.init, a.train_steps
        )
        print(
            f"\naudit wall time: {out['wall']:.1f} s; phases: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in out["timings"].items())
        )
        print("\n| pipeline | attack | AUC | TPR@0.1% | TPR@1% | adv. | eps LB | init TPR@1% |")
        print("|---|---|---|---|---|---|---|---|")
        for name, m in out["attacks"].items():
            print(_row("release", name, m))
        for pipe, b in out["baselines"].items():
            for name, m in b["attacks"].items():
                print(_row(pipe, name, m))
        cc = out["copy_check"]
        print(
            f"\ncopy check: {cc['near_copies']}/{cc['n_released']} near copies "
            f"(threshold {cc['threshold']:.4f})"
        )
        print(
            f"target test accuracy: {out['targets']['test_accuracy_mean']:.3f}; naive: "
            f"{out['baselines'].get('naive', {}).get('targets', {}).get('test_accuracy_mean')}; "
            f"full data: "
            f"{out['baselines'].get('full_data', {}).get('targets', {}).get('test_accuracy_mean')}"
        )


if __name__ == "__main__":
    main()
