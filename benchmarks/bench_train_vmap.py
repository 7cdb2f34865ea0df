"""K networks trained side by side with jax.vmap against a Python loop over the same networks.

ConvNet width 32 (depth 3), MNIST-sized 28×28×1 (or ``--size``) random data, MSE on random soft labels, the
evaluate protocol's optimiser. Both variants are compiled (and warmed up) before timing, so the
table compares steady-state training time only. The vmapped run and the loop train the very same
networks (model m gets key m in both), so the work is identical.

Also times ``side_by_side="map"`` (lax.map over the models inside one jit). ``side_by_side="loop"``
(the CPU default) is the Python-loop column: one compiled one-model program called per model.

Usage: python benchmarks/bench_train_vmap.py [--k 1 5 10] [--n 10 100] [--steps 100] [--size 8]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rcig_release import train  # noqa: E402


def _timed(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[5])
    ap.add_argument("--n", type=int, nargs="+", default=[10])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--size", type=int, default=28, help="image side (8: the built-in digits)")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    print(
        f"ConvNet width {args.width}, {args.size}x{args.size}x1, {args.steps} steps, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}"
    )
    print(f"{'images':>6} {'K':>3} {'vmap s':>8} {'lax.map s':>9} {'loop s':>8} {'loop/vmap':>9}")
    for n in args.n:
        x = rng.normal(size=(n, args.size, args.size, 1)).astype(np.float32)
        y = rng.normal(size=(n, 10)).astype(np.float32)
        kw = dict(num_classes=10, steps=args.steps, width=args.width, lr=1e-4, warmup=50)
        for k in args.k:
            keys = jax.random.split(jax.random.key(0), k)

            vmapped, mapped, loop = (
                functools.partial(
                    train.train_models,
                    "convnet",
                    x,
                    y,
                    n_models=k,
                    key=keys,
                    side_by_side=mode,
                    **kw,
                )
                for mode in ("vmap", "map", "loop")
            )

            vmapped()  # compile
            mapped()
            loop()
            tv = _timed(vmapped)
            tm = _timed(mapped)
            tl = _timed(loop)
            print(f"{n:>6} {k:>3} {tv:>8.2f} {tm:>9.2f} {tl:>8.2f} {tl / tv:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
