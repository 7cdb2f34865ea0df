"""Seconds per outer step and peak memory of the DP-RCIG step against the ordinary step, at the
same configuration (docs/dp.md).

    python benchmarks/bench_dp_step.py --ipc 1 10 --steps 6 --timeout 1800

Each (ipc, step kind) runs in its own process, so its peak RSS (``getrusage`` max RSS) is that
configuration's alone, as in bench_step.py: it loads the data (MNIST ``../shared/data/mnist.npz``
by default), builds the cpu preset's configuration (real batch 128 unless ``--real-batch``)
with the learning-rate search off and noise initialisation, and runs ``--steps`` steps through
the product's ``distill``, timing each with a device sync. The DP row uses a fixed noise
multiplier (1.0; the step's cost does not depend on it) and the expected batch size equal to the
real batch (q = real_batch / N). The first step (compilation) is reported apart; "s/step" is the
median of the others. Tiny check: ``--data digits --width 2 --steps 2``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from steptiming import StepTimer, peak_rss_gb, run_child

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/mnist.npz"


def child(data: str, kind: str, ipc: int, steps: int, width: int | None, real_batch: int) -> dict:
    import numpy as np

    from rcig_release.config import make_distill_config, resolve, with_data_defaults
    from rcig_release.data import load_dataset, preprocessor_for
    from rcig_release.distill import distill

    ds = load_dataset(data)
    dp = dict(dp_epsilon=8.0, dp_noise_multiplier=1.0) if kind == "dp" else {}
    cfg = make_distill_config(
        "cpu",
        None,
        ipc=ipc,
        steps=steps,
        tune_lr=False,
        init="noise",
        width=width,
        real_batch=real_batch,
        **dp,
    )
    cfg = with_data_defaults(cfg, len(ds.y_train))
    res = resolve(cfg, ds.image_shape, ds.num_classes)
    x = preprocessor_for(ds.x_train, cfg, zca=res.zca).transform(ds.x_train).astype(np.float32)
    timer = StepTimer()
    result = distill(cfg, x, ds.y_train, ds.num_classes, on_state=timer)
    row = {
        "kind": kind,
        "ipc": ipc,
        "width": cfg.width,
        "real_batch": cfg.real_batch,
        "n_train": int(len(ds.y_train)),
        **timer.summary(),
        "peak_rss_gb": peak_rss_gb(),
    }
    if kind == "dp":
        row["max_batch_size"] = result.info["dp"]["max_batch_size"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.is_file() else "digits")
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--width", type=int, default=None, help="default: the cpu preset's (32)")
    ap.add_argument("--real-batch", type=int, default=128)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(
            json.dumps(child(a.data, a.child[0], int(a.child[1]), a.steps, a.width, a.real_batch))
        )
        return
    rows = []
    for ipc in a.ipc:
        for kind in ("ordinary", "dp"):
            cmd = [
                sys.executable,
                __file__,
                "--data",
                a.data,
                "--steps",
                str(a.steps),
                "--real-batch",
                str(a.real_batch),
                "--child",
                kind,
                str(ipc),
            ]
            if a.width:
                cmd += ["--width", str(a.width)]
            row = run_child(cmd, a.timeout, {"kind": kind, "ipc": ipc})
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        f"\n{'ipc':>4} {'step':>9} {'first s':>8} {'s/step':>8} {'x ordinary':>10} "
        f"{'peak GB':>8} {'B_max':>6}"
    )
    base = {r["ipc"]: r for r in rows if r.get("kind") == "ordinary" and "error" not in r}
    for r in rows:
        if "error" in r:
            print(f"{r['ipc']:>4} {r['kind']:>9}  {r['error']}")
            continue
        ratio = r["s_per_step"] / base[r["ipc"]]["s_per_step"] if r["ipc"] in base else float("nan")
        print(
            f"{r['ipc']:>4} {r['kind']:>9} {r['first_step_s']:>8.1f} {r['s_per_step']:>8.2f} "
            f"{ratio:>10.2f} {r['peak_rss_gb']:>8.2f} {r.get('max_batch_size', ''):>6}"
        )


if __name__ == "__main__":
    main()
