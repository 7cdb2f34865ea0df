"""Seconds per outer step on one and on two simulated CPU devices, and the result equality.

    python benchmarks/bench_devices.py --data /work/shared/data/mnist.npz --ipc 1 --steps 30

One child process started with ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (two XLA
devices sharing this machine's cores) distils the same configuration (the cpu preset, the
learning-rate search off) on a one-device mesh and on a two-device mesh (the real batch split
between the devices, rcig_release/parallel.py), times every step with a device sync (median
after the first, which compiles) and compares the two distilled sets. On one CPU the two
devices share the same cores, so this measures the cost of sharding (the collectives and the
split programs), not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from steptiming import StepTimer, peak_rss_gb

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/mnist.npz"


def child(data: str, ipc: int, steps: int, dp: bool) -> dict:
    import jax
    import numpy as np

    from rcig_release import parallel
    from rcig_release.config import make_distill_config, resolve, with_data_defaults
    from rcig_release.data import load_dataset, preprocessor_for
    from rcig_release.distill import distill

    load_before = os.getloadavg()  # the machine is shared: its load says what the times mean
    ds = load_dataset(data)
    extra = {"dp_epsilon": 8.0, "init": "noise", "zca": False} if dp else {}
    cfg = make_distill_config("cpu", None, ipc=ipc, steps=steps, tune_lr=False, **extra)
    res = resolve(cfg, ds.image_shape, ds.num_classes)
    x = preprocessor_for(ds.x_train, cfg, zca=res.zca).transform(ds.x_train).astype(np.float32)
    rows = {}
    out = {}
    for name, devices in (("1", jax.devices()[:1]), ("2", jax.devices()[:2])):
        timer = StepTimer()
        r = distill(
            cfg, x, ds.y_train, ds.num_classes, on_state=timer, mesh=parallel.data_mesh(devices)
        )
        rows[name] = timer.summary()
        out[name] = r
    diff = {
        "images_max_abs": float(np.abs(out["1"].images_model - out["2"].images_model).max()),
        "labels_max_abs": float(np.abs(out["1"].labels - out["2"].labels).max()),
        "images_scale": float(np.abs(out["1"].images_model).max()),
    }
    return {
        "ipc": ipc,
        "steps": steps,
        "dp": dp,
        "real_batch": with_data_defaults(cfg, len(ds.y_train)).real_batch,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "devices": rows,
        "difference": diff,
        "peak_rss_gb": peak_rss_gb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--dp", action="store_true", help="a DP run (differences are then noise)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.data, a.ipc, a.steps, a.dp)))
        return
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    cmd = [sys.executable, __file__, "--child", "--data", a.data, "--ipc", str(a.ipc)]
    cmd += ["--steps", str(a.steps)] + (["--dp"] if a.dp else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        raise SystemExit(r.returncode)
    row = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps(row))
    print(f"\n{'devices':>7} {'first step s':>12} {'s/step':>8} {'steps timed':>11}")
    for name, t in row["devices"].items():
        print(
            f"{name:>7} {t['first_step_s']:>12.1f} {t['s_per_step']:>8.3f} {t['steps_timed']:>11}"
        )
    d = row["difference"]
    print(
        f"\nafter {row['steps']} steps: max |Δ images| {d['images_max_abs']:.2e} "
        f"(images up to {d['images_scale']:.2f}), max |Δ labels| {d['labels_max_abs']:.2e}; "
        f"peak RSS {row['peak_rss_gb']:.2f} GB; real batch {row['real_batch']} "
        f"({row['real_batch'] // 2} per device on two); load average (1, 5, 15 min) before "
        f"{tuple(round(v, 1) for v in row['load_before'])}, after "
        f"{tuple(round(v, 1) for v in row['load_after'])}"
    )


if __name__ == "__main__":
    main()
