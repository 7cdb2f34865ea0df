"""Seconds per outer step, peak memory and FLOPs of one RCIG step on MNIST, per preset and ipc.

    python benchmarks/bench_step.py --ipc 1 10 50 --preset cpu paper --steps 4 --timeout 900

Each (preset, ipc) runs in its own process (so peak memory is that configuration's alone): it
loads MNIST, builds the preset's configuration with the learning-rate search off, compiles one
outer step (XLA's cost analysis gives its FLOPs), runs ``--steps`` steps through the product's
``distill`` and times them with a device sync after each. The first step (compile) is reported
apart; "s/step" is the median of the others. FLOPs/s is set against this CPU's float32 matmul
rate measured in the same process (2048³), which is the practical hardware limit. "XLA GB" is
the compiled step's buffers (arguments, outputs, temporaries) from XLA's memory analysis.
``--steps 0`` compiles only: FLOPs and buffer sizes of a configuration too slow to time here.

The memory path for large support sets (rcig/memory.py): ``--memory-path auto on off`` runs each
configuration with the default rule, forced on and forced off (``--support-batch`` sets its
subset size). ``--data`` takes any data spec the product reads (``/work/shared/data/cifar10.npz``)
or ``synthetic:C:N:HxWxD`` (N random images of C classes of that shape: only shapes matter to
memory and time, e.g. CIFAR-100's ``synthetic:100:50000:32x32x3``).

    python benchmarks/bench_step.py --data /work/shared/data/cifar10.npz --ipc 50 \
        --preset cpu --memory-path on off --steps 3 --timeout 3600
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from steptiming import StepTimer, peak_rss_gb, run_child

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/mnist.npz"


def _matmul_rate() -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(5):
        f(a).block_until_ready()
    return 5 * 2 * 2048**3 / (time.perf_counter() - t)


def _dataset(data: str):
    """The product's loader, or random images of a given shape (``synthetic:C:N:HxWxD``)."""
    from rcig_release.data import load_dataset

    if not data.startswith("synthetic:"):
        return load_dataset(data)
    import types

    import numpy as np

    _, c, n, shape = data.split(":")
    hwd = tuple(int(v) for v in shape.split("x"))
    rng = np.random.default_rng(0)
    x = rng.random((int(n), *hwd), dtype=np.float32)
    y = np.arange(int(n)) % int(c)
    return types.SimpleNamespace(x_train=x, y_train=y, image_shape=hwd, num_classes=int(c))


def child(data: str, preset: str, ipc: int, steps: int, memory: str, support_batch: int) -> dict:
    import jax
    import numpy as np

    from rcig_release.config import make_distill_config, resolve, with_data_defaults
    from rcig_release.data import fit_preprocessor
    from rcig_release.distill import distill, initial_set
    from rcig_release.rcig.state import init_state, make_setup
    from rcig_release.rcig.step import make_step

    ds = _dataset(data)
    memory_path = {"auto": None, "on": True, "off": False}[memory]
    cfg = make_distill_config(
        preset,
        None,
        ipc=ipc,
        steps=steps,
        tune_lr=False,
        memory_path=memory_path,
        support_batch=support_batch,
    )
    cfg = with_data_defaults(cfg, len(ds.y_train))
    res = resolve(cfg, ds.image_shape, ds.num_classes)
    x = fit_preprocessor(ds.x_train, zca=res.zca).transform(ds.x_train).astype(np.float32)
    setup = make_setup(cfg, res, tuple(x.shape[1:]))
    x0, y0, _ = initial_set(cfg, x, ds.y_train, ds.num_classes)
    state = init_state(setup, x0, y0, jax.random.PRNGKey(0))
    compiled = make_step(setup).lower(state, x, np.asarray(ds.y_train, np.int32)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))
    mem = compiled.memory_analysis()
    xla_gb = (
        mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    ) / 2**30
    row = {
        "preset": preset,
        "ipc": ipc,
        "width": cfg.width,
        "real_batch": cfg.real_batch,
        "n_support": res.n_support,
        "memory_path": bool(setup.memory_path),
        "support_batch": setup.support_batch if setup.memory_path else None,
        "materialized_jacobian": bool(setup.materialize_jacobian),
        "gflop_per_step": flops / 1e9,
        "xla_buffers_gb": xla_gb,
    }
    if steps == 0:  # compile only: what one step would cost, without running it
        return {**row, "peak_rss_gb": peak_rss_gb()}
    timer = StepTimer()
    distill(cfg, x, ds.y_train, ds.num_classes, on_state=timer)
    rate = _matmul_rate()
    timing = timer.summary()
    return {
        **row,
        **timing,
        "peak_rss_gb": peak_rss_gb(),
        "achieved_gflops": flops / timing["s_per_step"] / 1e9,
        "matmul_gflops": rate / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--preset", nargs="+", default=["cpu", "paper"])
    ap.add_argument(
        "--steps",
        type=int,
        default=4,
        help="steps to run; 0 compiles only (FLOPs and XLA's buffer sizes, no timing)",
    )
    ap.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    ap.add_argument(
        "--memory-path",
        nargs="+",
        default=["auto"],
        choices=["auto", "on", "off"],
        help="the memory path: the default rule, forced on, forced off (one run each)",
    )
    ap.add_argument("--support-batch", type=int, default=500, help="memory path: subset size")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        preset, ipc, steps, memory = a.child
        row = child(a.data, preset, int(ipc), int(steps), memory, a.support_batch)
        print(json.dumps(row))
        return
    rows = []
    for preset in a.preset:
        for ipc in a.ipc:
            for memory in a.memory_path:
                cmd = [
                    sys.executable,
                    __file__,
                    "--data",
                    a.data,
                    "--support-batch",
                    str(a.support_batch),
                    "--child",
                    preset,
                    str(ipc),
                    str(a.steps),
                    memory,
                ]
                ident = {"preset": preset, "ipc": ipc, "memory_path": memory}
                row = run_child(cmd, a.timeout, ident)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(
        f"\n{'preset':>6} {'ipc':>4} {'memory':>7} {'first s':>8} {'s/step':>8} {'peak GB':>8} "
        f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'matmul GFLOP/s':>14} {'XLA GB':>7}"
    )
    for r in rows:
        mem = (
            "on"
            if r.get("memory_path") is True
            else "off"
            if r.get("memory_path") is False
            else r.get("memory_path")
        )
        if "error" in r:
            print(f"{r['preset']:>6} {r['ipc']:>4} {mem:>7}  {r['error']}")
            continue
        if "s_per_step" not in r:
            print(
                f"{r['preset']:>6} {r['ipc']:>4} {mem:>7}  compiled only: {r['gflop_per_step']:.1f} GFLOP/step, "
                f"XLA buffers {r['xla_buffers_gb']:.2f} GB, peak RSS while compiling "
                f"{r['peak_rss_gb']:.2f} GB"
            )
            continue
        print(
            f"{r['preset']:>6} {r['ipc']:>4} {mem:>7} {r['first_step_s']:>8.1f} {r['s_per_step']:>8.2f} "
            f"{r['peak_rss_gb']:>8.2f} {r['gflop_per_step']:>10.1f} {r['achieved_gflops']:>8.1f} "
            f"{r['matmul_gflops']:>14.0f} {r['xla_buffers_gb']:>7.2f}"
        )


if __name__ == "__main__":
    main()
