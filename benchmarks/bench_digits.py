"""Built-in digits: accuracy and time of distill + evaluate for a grid of settings.

    python benchmarks/bench_digits.py --steps 100 200 --proto-lr 0.003 0.01
    python benchmarks/bench_digits.py --full-recipe 2000:1e-4:500 300:2e-3:50

The first form distils the digits training split with the cpu preset for every (steps, proto_lr,
real_batch) combination, then evaluates the EMA set with the evaluate protocol (5 ConvNets, test
split), as ``rcig-release distill`` + ``rcig-release evaluate`` do. ``--steps 0`` is the random
real-image baseline. The second form trains one ConvNet on the whole training split with each
``steps:lr:warmup`` cross-entropy recipe (the audit's full-data baseline) and reports its training
and test accuracy and loss: how closely each recipe fits the private split.
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import numpy as np

from rcig_release.config import make_distill_config, resolve
from rcig_release.data import fit_preprocessor, load_dataset
from rcig_release.distill import distill
from rcig_release.train import evaluate_arrays, predict, train_models


def _ce(z: np.ndarray, y: np.ndarray) -> float:
    z = z - z.max(-1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(len(y)), y]))


def distill_grid(ds, prep, a) -> None:
    x, xt = prep.transform(ds.x_train), prep.transform(ds.x_test)
    print(f"{'steps':>6} {'proto_lr':>9} {'batch':>6} {'distill s':>10} {'accuracy %':>15}")
    for steps, lr, rb in itertools.product(a.steps, a.proto_lr, a.real_batch):
        cfg = make_distill_config(
            "cpu", ipc=a.ipc, steps=steps, proto_lr=lr, real_batch=rb, seed=a.seed
        )
        res = resolve(cfg, ds.image_shape, ds.num_classes)
        t = time.perf_counter()
        out = distill(cfg, x, ds.y_train, ds.num_classes)
        secs = time.perf_counter() - t
        r = evaluate_arrays(
            out.images_model,
            out.labels,
            xt,
            ds.y_test,
            arch="convnet",
            num_classes=ds.num_classes,
            n_models=5,
            seed=0,
            width=cfg.width,
            depth=res.depth,
        )
        print(
            f"{steps:>6} {lr:>9g} {rb:>6} {secs:>10.1f} "
            f"{100 * r['accuracy_mean']:>8.2f} ± {100 * r['accuracy_std']:.2f}",
            flush=True,
        )


def full_recipes(ds, prep, a) -> None:
    x, xt = prep.transform(ds.x_train), prep.transform(ds.x_test)
    y, yt = np.asarray(ds.y_train), np.asarray(ds.y_test)
    print(
        f"{'steps':>6} {'lr':>7} {'warmup':>6} {'train s':>8} {'train acc':>9} {'test acc':>8} "
        f"{'train CE':>8} {'test CE':>8}"
    )
    for spec in a.full_recipe:
        steps, lr, warmup = spec.split(":")
        t = time.perf_counter()
        p = train_models(
            "convnet",
            x,
            y,
            n_models=1,
            key=jax.random.key(a.seed),
            num_classes=ds.num_classes,
            steps=int(steps),
            lr=float(lr),
            warmup=int(warmup),
            batch=256,
            width=32,
            loss="ce",
        )
        jax.block_until_ready(p)
        secs = time.perf_counter() - t
        z, zt = (predict("convnet", p, v, num_classes=ds.num_classes, width=32)[0] for v in (x, xt))
        print(
            f"{steps:>6} {lr:>7} {warmup:>6} {secs:>8.1f} {np.mean(z.argmax(-1) == y):>9.4f} "
            f"{np.mean(zt.argmax(-1) == yt):>8.4f} {_ce(z, y):>8.4f} {_ce(zt, yt):>8.4f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--steps", type=int, nargs="+", default=[200])
    ap.add_argument("--proto-lr", type=float, nargs="+", default=[1e-2])
    ap.add_argument("--real-batch", type=int, nargs="+", default=[256])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-recipe", nargs="+", help="steps:lr:warmup of full-data training")
    a = ap.parse_args()
    ds = load_dataset("digits", seed=0)
    prep = fit_preprocessor(ds.x_train, zca=False)
    print(f"jax {jax.__version__}, {jax.default_backend()}, {len(jax.devices())} device(s)")
    if a.full_recipe:
        full_recipes(ds, prep, a)
    else:
        distill_grid(ds, prep, a)


if __name__ == "__main__":
    main()
