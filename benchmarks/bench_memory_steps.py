"""XLA's buffers of one outer step against the number of unrolled inner and HVP Adam steps,
memory path and jvp path, compiled only (issue #23: where the memory path's buffers came from).

    python benchmarks/bench_memory_steps.py --ipc 10 --support-batch 100 \
        --steps 2,2 4,2 2,4 --paths off on untied

Random CIFAR-shaped data (32×32×3, 10 classes; only shapes matter to buffers), flips on, so the
support set has 2·ipc·10 rows; the cpu preset's width 32, real batch 128, 2 pool steps, ZCA off,
the Jacobian never materialised. "off": the jvp path; "on": the memory path; "untied": the
memory path with ``memory.after`` replaced by the identity, i.e. the code before the fix, whose
temporaries grow with every unrolled step. "temp MB" is XLA's temporary buffers
(``memory_analysis().temp_size_in_bytes``); arguments and outputs are the same for all rows.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from rcig_release.config import DistillConfig, resolve
from rcig_release.rcig import memory, step
from rcig_release.rcig.state import init_state, make_setup

SHAPE = (32, 32, 3)
CLASSES = 10


def compiled(path: str, ipc: int, inner: int, hvp: int, b: int) -> tuple[float, float]:
    """(temp MB, GFLOP) of one outer step."""
    cfg = DistillConfig(
        ipc=ipc,
        init="real",
        width=32,
        pool_size=2,
        pool_max_steps=2,
        real_batch=128,
        n_inner_steps=inner,
        n_hvp_steps=hvp,
        support_batch=b,
        memory_path=path != "off",
        jacobian_mb=0.0,
        tune_lr=False,
        zca=False,
    )
    setup = make_setup(cfg, resolve(cfg, SHAPE, CLASSES), SHAPE)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((ipc * CLASSES, *SHAPE)).astype(np.float32)
    y0 = (np.eye(CLASSES, dtype=np.float32) - 1 / CLASSES)[np.repeat(np.arange(CLASSES), ipc)]
    state = init_state(setup, x0, y0, jax.random.PRNGKey(0))
    x = rng.standard_normal((256, *SHAPE)).astype(np.float32)
    y = (np.arange(256) % CLASSES).astype(np.int32)
    step._make_step.cache_clear()  # a fresh trace: "untied" must not reuse a tied one
    jax.clear_caches()
    tie = memory.after
    if path == "untied":
        memory.after = lambda a, *xs: a  # type: ignore[assignment]
    try:
        c = step.make_step(setup).lower(state, x, y).compile()
    finally:
        memory.after = tie
    cost = c.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return c.memory_analysis().temp_size_in_bytes / 2**20, float(cost.get("flops", 0)) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--support-batch", type=int, default=100)
    ap.add_argument("--steps", nargs="+", default=["2,2", "4,2", "2,4"], help="inner,hvp")
    ap.add_argument("--paths", nargs="+", default=["off", "on", "untied"])
    a = ap.parse_args()
    print(f"{'path':>7} {'inner':>5} {'hvp':>4} {'temp MB':>9} {'GFLOP':>7} {'compile s':>9}")
    for path in a.paths:
        for s in a.steps:
            inner, hvp = (int(v) for v in s.split(","))
            t = time.perf_counter()
            mb, gflop = compiled(path, a.ipc, inner, hvp, a.support_batch)
            dt = time.perf_counter() - t
            print(f"{path:>7} {inner:>5} {hvp:>4} {mb:>9.1f} {gflop:>7.1f} {dt:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
