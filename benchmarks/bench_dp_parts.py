"""Seconds of the DP-RCIG step's parts on MNIST 1 ipc: prepare, chunk, host work, finish.

    python benchmarks/bench_dp_parts.py                      # this checkout
    PYTHONPATH=/path/to/older/checkout python benchmarks/bench_dp_parts.py

Works with the step before issue #20 (noise drawn inside the jitted ``finish`` from the seed) and
after it (noise added on the host in float64 from OS entropy, between ``chunk`` and ``finish``):
"host" is the device-to-host copy of the clipped sums plus ``add_noise`` (0 before). The cpu
preset's configuration as in bench_dp_step.py (width 32, real batch 128 = qN, σ = 1, noise
initialisation, no learning-rate search); one Poisson batch of one chunk per step, each part
synchronised; the first step (compilation) apart, the median of the other ``--steps`` − 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/mnist.npz"


def main() -> None:
    from rcig_release.config import make_distill_config, resolve, with_data_defaults
    from rcig_release.data import load_dataset, preprocessor_for
    from rcig_release.distill import initial_set
    from rcig_release.rcig import dp
    from rcig_release.rcig.state import init_state, make_setup

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--steps", type=int, default=6)
    a = ap.parse_args()
    ds = load_dataset(a.data)
    cfg = make_distill_config(
        "cpu",
        None,
        ipc=1,
        steps=a.steps,
        tune_lr=False,
        init="noise",
        real_batch=128,
        dp_epsilon=8.0,
        dp_noise_multiplier=1.0,
    )
    cfg = with_data_defaults(cfg, len(ds.y_train))
    res = resolve(cfg, ds.image_shape, ds.num_classes)
    x = preprocessor_for(ds.x_train, cfg, zca=res.zca).transform(ds.x_train).astype(np.float32)
    setup = make_setup(cfg, res, ds.image_shape)
    xi, yi, _ = initial_set(cfg, x, ds.y_train, ds.num_classes)
    state = init_state(setup, xi, yi, jax.random.PRNGKey(0))
    xd, yd = jnp.asarray(x), jnp.asarray(ds.y_train, jnp.int32)
    step = dp.DPStep(setup, cfg, len(ds.y_train))
    after = hasattr(dp, "secret_rng")
    rng = np.random.default_rng(0)  # the batches (timing only)
    times: dict[str, list[float]] = {k: [] for k in ("prepare", "chunk", "host", "finish", "total")}
    for _ in range(a.steps):
        t0 = time.perf_counter()
        prep = jax.block_until_ready(step._prepare(state))
        t1 = time.perf_counter()
        k, d, w, k_ss, jac, il = prep
        idx = np.flatnonzero(rng.random(len(ds.y_train)) < step.q)
        ((cidx, mask),) = dp.chunks(idx, step.b_max)
        clip = jnp.float32(step.clip)
        out = jax.block_until_ready(step._chunk(state, k, d, w, xd, yd, cidx, mask, clip))
        t2 = time.perf_counter()
        if after:
            sums = {kk: np.asarray(v, np.float64) for kk, v in jax.device_get(out[0]).items()}
            mean = dp.add_noise(sums, step.sigma * step.clip, step.normaliser, dp.secret_rng())
            t3 = time.perf_counter()
            state, _ = jax.block_until_ready(step._finish(state, k, d, k_ss, jac, il, mean))
        else:
            t3 = time.perf_counter()
            noise_std, norm = jnp.float32(step.sigma * step.clip), jnp.float32(step.normaliser)
            state, _ = jax.block_until_ready(
                step._finish(state, k, d, k_ss, jac, il, out, noise_std, norm)
            )
        t4 = time.perf_counter()
        for key, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
            times[key].append(v)
    row = {k: float(np.median(v[1:])) for k, v in times.items()}
    print(json.dumps({"version": "after #20" if after else "before #20", **row}))
    print(f"{'version':>10} " + " ".join(f"{k:>8}" for k in row))
    print(f"{'after' if after else 'before':>10} " + " ".join(f"{v:>8.3f}" for v in row.values()))


if __name__ == "__main__":
    main()
