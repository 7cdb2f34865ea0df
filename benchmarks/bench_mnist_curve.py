"""Accuracy against distillation wall-clock time (MNIST, CIFAR-10), with the product's own pieces.

    python benchmarks/bench_mnist_curve.py --ipc 1 --minutes 30 --out /tmp/curve1
    python benchmarks/bench_mnist_curve.py --data ../shared/data/cifar10.npz --minutes 60 \
        --marks 5,10,20,30,45,60 --eval-width 32,128 --out /tmp/cifar1

Distils ../shared/data/mnist.npz (or --data) with the given preset, snapshots the EMA distilled
set at the wall-clock marks (minutes, distillation time only: tuning and compile included), then
evaluates every snapshot with the evaluate protocol (5 ConvNets; at each ``--eval-width``, default
the distillation width) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from rcig_release.config import make_distill_config, resolve, with_data_defaults
from rcig_release.data import fit_preprocessor, load_dataset
from rcig_release.distill import distill
from rcig_release.train import default_steps, evaluate_arrays


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/mnist.npz")
    )
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--marks", default="2,5,10,15,20,25,30,40,50,60")
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--width", type=int)
    ap.add_argument("--real-batch", type=int)
    ap.add_argument("--proto-lr", type=float, help="AdaBelief lr for images and labels")
    ap.add_argument("--eval-width", help="comma-separated evaluation widths (default: --width's)")
    ap.add_argument("--seed", type=int, help="distillation seed (default: the config's)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--eval-only",
        action="store_true",
        help="evaluate the snapshots already in --out (snaps.json) without distilling",
    )
    ap.add_argument("--eval-marks", help="comma-separated minutes to evaluate (default: all)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(a.data)
    cfg = make_distill_config(
        a.preset,
        None,
        ipc=a.ipc,
        steps=a.steps,
        width=a.width,
        real_batch=a.real_batch,
        proto_lr=a.proto_lr,
        seed=a.seed,
    )
    cfg = with_data_defaults(cfg, len(ds.y_train))
    res = resolve(cfg, ds.image_shape, ds.num_classes)
    prep = fit_preprocessor(ds.x_train, zca=res.zca)
    x = prep.transform(ds.x_train).astype(np.float32)
    marks = [float(m) for m in a.marks.split(",") if float(m) <= a.minutes]
    t0 = time.perf_counter()
    snaps: list[dict] = []

    def on_state(step, state):
        elapsed = (time.perf_counter() - t0) / 60
        if marks and elapsed >= marks[0]:
            m = marks.pop(0)
            ema = jax.device_get(state.psi_ema)
            np.savez(a.out / f"snap_{m:g}.npz", x=ema["x"], y=ema["y"])
            snaps.append({"minutes": m, "step": int(step), "elapsed": elapsed * 60})
            (a.out / "snaps.json").write_text(json.dumps(snaps, indent=1))
            print(f"snapshot at {elapsed:.1f} min, step {step}", flush=True)
            if not marks:
                raise KeyboardInterrupt  # time budget reached

    if a.eval_only:
        snaps = json.loads((a.out / "snaps.json").read_text())
    else:
        try:
            distill(cfg, x, ds.y_train, ds.num_classes, on_state=on_state)
        except Exception as e:  # Interrupted is raised by the budget stop
            print("stopped:", type(e).__name__)
    if a.eval_marks:
        keep = {float(m) for m in a.eval_marks.split(",")}
        snaps = [s for s in snaps if s["minutes"] in keep]
    x_test = prep.transform(ds.x_test).astype(np.float32)
    rows = []
    widths = [int(w) for w in a.eval_width.split(",")] if a.eval_width else [cfg.width]
    for s in snaps:
        z = np.load(a.out / f"snap_{s['minutes']:g}.npz")
        xs, ys = z["x"], z["y"]
        steps = default_steps(len(xs))  # the protocol's U from the count before the flips
        if res.use_flip:
            xs, ys = np.concatenate([xs, xs[:, :, ::-1]]), np.concatenate([ys, ys])
        for w in widths:
            t = time.perf_counter()
            r = evaluate_arrays(
                xs,
                ys,
                x_test,
                ds.y_test,
                arch="convnet",
                num_classes=ds.num_classes,
                n_models=5,
                seed=0,
                width=w,
                depth=res.depth,
                steps=steps,
            )
            rows.append(
                {
                    **s,
                    "eval_width": w,
                    "eval_steps": steps,
                    "acc_mean": r["accuracy_mean"],
                    "acc_std": r["accuracy_std"],
                    "eval_s": time.perf_counter() - t,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{Path(a.data).name} ipc={a.ipc} preset={a.preset} width={cfg.width} "
        f"real_batch={cfg.real_batch} zca={res.zca} flips={res.use_flip} test={len(ds.y_test)}"
    )
    print(f"{'minutes':>8} {'step':>6} {'eval width':>10} {'accuracy %':>16}")
    for r in rows:
        print(
            f"{r['minutes']:>8g} {r['step']:>6} {r['eval_width']:>10} "
            f"{100 * r['acc_mean']:>8.2f} ± {100 * r['acc_std']:.2f}"
        )
    name = "curve.json" if not a.eval_only else f"curve-{'-'.join(map(str, widths))}.json"
    (a.out / name).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
