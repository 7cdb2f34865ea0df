"""Levers of DP feature means (issue #20), on the noise-free statistic of a training subset.

What limits ``--dp-mechanism features`` at 10 ipc when the noise does not (ε = 10 gained 1.6
points over ε = 1 on MNIST): the initialisation, the number of networks K, augmentation. Each
variant computes the statistic with the product's code (``dpdistill.statistic``, cached per
subset/K/augmentation under OUT), estimates the means (``dpstat.estimate``), optimises the images
(``statmatch.fit``; with ``--match-aug`` its loss on augmented images) and evaluates
``--models`` ConvNets (width 32, the evaluate protocol's steps) on the first ``--n-test`` test
images. No noise is added unless ``--sigma`` is given (in units of C, on the class sums):
these are the mechanism's ceilings, not DP figures. One JSON line per run is appended to
OUT/results.jsonl and the table printed.

    python benchmarks/bench_dp_levers.py --data ../shared/data/mnist.npz --init noise --out /tmp/l
    python benchmarks/bench_dp_levers.py --data ../shared/data/mnist.npz --init dp-mean --out /tmp/l
    python benchmarks/bench_dp_levers.py --data ../shared/data/mnist.npz --k 50 --out /tmp/l
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rcig_release import augment
from rcig_release.config import depth_for_size
from rcig_release.rcig import dpstat, statmatch
from rcig_release.rcig.dpdistill import block_sizes, feature_function
from rcig_release.train import evaluate_arrays


def load(path: str, n_train: int, n_test: int):
    d = np.load(path)

    def model_space(a):  # the DP runs' fixed preprocessing: [0, 255] → [−1, 1]
        a = a.astype(np.float32) / 127.5 - 1.0
        return a[..., None] if a.ndim == 3 else a

    idx = np.random.default_rng(0).permutation(len(d["y_train"]))[:n_train]
    return (
        model_space(d["x_train"][idx]),
        d["y_train"][idx].astype(np.int64),
        model_space(d["x_test"][:n_test]),
        d["y_test"][:n_test].astype(np.int64),
    )


def statistic(s, x, y, classes, views: int) -> np.ndarray:
    """The product's statistic; with ``views`` > 0 each record contributes the mean of its
    contributions over that many augmented copies (norm still ≤ C)."""
    shape = x.shape[1:]
    if views == 0:
        return dpstat.statistic(feature_function(s, shape, classes), x, y, classes, s.clip,
                                s.count_weight, s.bounds(shape))  # fmt: skip
    ff = feature_function(s, shape, classes)
    key, total = jax.random.PRNGKey(123), None
    for st in range(0, len(y), dpstat.CHUNK):
        xb = jnp.asarray(x[st : st + dpstat.CHUNK])
        u = (
            sum(
                dpstat.contributions(
                    ff(np.asarray(augment.augment(jax.random.fold_in(key, st * 1000 + v), xb))),
                    s.clip,
                    s.count_weight,
                    s.bounds(shape),
                )  # fmt: skip
                for v in range(views)
            )
            / views
        )
        part = dpstat.class_sums(u, y[st : st + dpstat.CHUNK], classes)
        total = part if total is None else total + part
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--k", type=int, default=10, help="networks K")
    p.add_argument("--views", type=int, default=0, help="augmented views per record (0: none)")
    p.add_argument("--match-aug", action="store_true", help="augment the images in the loss")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=statmatch.LR)
    p.add_argument("--per-step", type=int, default=statmatch.PER_STEP)
    p.add_argument("--init", choices=["noise", "dp-mean"], default="noise")
    p.add_argument("--init-noise", type=float, default=0.3)
    p.add_argument("--sigma", type=float, default=0.0, help="noise std on the sums, units of C")
    p.add_argument("--models", type=int, default=1)
    p.add_argument("--tag", default="")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    x, y, xt, yt = load(a.data, a.n_train, a.n_test)
    classes, shape = int(y.max()) + 1, x.shape[1:]
    s = dpstat.StatSettings(
        networks=a.k, width=32, depth=depth_for_size(max(shape[:2])), clip=1.0,
        count_weight=0.1, seed=0, pixels=True,
    )  # fmt: skip
    cache = a.out / f"stat-{Path(a.data).stem}-{a.n_train}-k{a.k}-views{a.views}.npy"
    t0 = time.perf_counter()
    if cache.is_file():
        stat = np.load(cache)
    else:
        stat = statistic(s, x, y, classes, a.views)
        np.save(cache, stat)
    t_stat = time.perf_counter() - t0
    noisy = stat + a.sigma * s.clip * np.random.default_rng(7).standard_normal(stat.shape)
    means, _ = dpstat.estimate(noisy, block_sizes(s, shape, classes), s)
    targets, ptgt = np.stack(means[: s.networks], axis=1), means[s.networks]
    apply, params = dpstat.feature_networks(s, shape, classes)
    if a.init == "noise":
        n = classes * a.ipc
        x0 = (0.3 * np.random.default_rng(1).standard_normal((n, *shape))).astype(np.float32)
    else:
        x0 = statmatch.dp_mean_init(ptgt, s.blocks, shape, a.ipc, a.init_noise, seed=0)
    m = statmatch.MatchSettings(steps=a.steps, lr=a.lr, per_step=a.per_step, ipc=a.ipc)
    t0 = time.perf_counter()
    xs, _, loss = statmatch.fit(apply, params, targets, x0, m, 0, pixel_target=ptgt,
                                augment=augment.augment if a.match_aug else None)  # fmt: skip
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate_arrays(xs, np.repeat(np.arange(classes), a.ipc), xt, yt, arch="convnet",
                         num_classes=classes, n_models=a.models, seed=0, width=32)  # fmt: skip
    row = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
           "accuracy": ev["accuracy_mean"], "accuracy_std": ev["accuracy_std"], "loss": loss,
           "stat_s": t_stat, "fit_s": t_fit, "eval_s": time.perf_counter() - t0}  # fmt: skip
    with (a.out / "results.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in (a.out / "results.jsonl").read_text().splitlines()]
    print("| tag | K | views | match aug | init | steps | models | accuracy | fit s | eval s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tag']} | {r['k']} | {r['views']} | {r['match_aug']} | {r['init']} | "
              f"{r['steps']} | {r['models']} | {100 * r['accuracy']:.2f} ± "
              f"{100 * r['accuracy_std']:.2f} % | {r['fit_s']:.0f} | {r['eval_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
