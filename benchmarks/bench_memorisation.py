"""The release's memorisation check on distilled runs (docs/benchmarks.md, "Memorisation check").

    python benchmarks/bench_memorisation.py RUN [RUN ...] [--power N] [--data SPEC]

For every RUN (a `distill --out` directory; no eval.json or audit needed): reloads the run's splits
from run.json's source (fingerprint-checked), runs ``memorisation_check`` on the released images
with the run's init indices, and prints the wall time and one line per image (p-values,
distances, the distances that would have flagged, flags). No pixel values, no training indices.

``--power N`` also checks N training images of the first run's data displaced by Gaussian noise of
RMS 0.09 (published 8-bit, rescaled to exactly 0.09) with their init indices: how many each test
flags at the level a release of N such images gets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rcig_release.release.memorisation import memorisation_check
from rcig_release.release.safety import load_private_splits
from rcig_release.release.testing import displaced


def show(res) -> None:
    print(f"  {res.describe()}")
    print(
        f"  |T| = {res.n_train}, |H| = {res.n_heldout}; nearest-record null: {res.null_heldout} held-out + "
        f"{res.null_train} leave-one-out pseudo-releases, quantiles "
        + ", ".join(f"q{q:g}={v:.3f}" for q, v in res.null_quantiles.items())
        + f"; a gap below {res.gap_flag:.3f} flags; init reference {res.init_reference} records"
    )
    print(
        f"  information: {res.exact_copies} exact copies, {res.near_copies} near copies "
        f"(threshold {res.near_copy_threshold:.4f})"
    )
    print(
        "  image  d_init  p_init    d_flag_init  closer(H,T)  d1     d2     gap    p_nearest  d_flag_nearest  flagged"
    )
    for im in res.images:
        init = (
            f"{im.d_init:.4f}  {im.p_init:.2e}  {im.d_flag_init:.4f}       {im.init_closer_heldout:>4},{im.init_closer_train:<6}"
            if im.d_init is not None
            else f"{'-':>6}  {'-':>8}  {'-':>11}  {'-':>11}"
        )
        print(
            f"  {im.index:>5}  {init}  {im.d_nearest:.4f} {im.d_second:.4f} {im.gap:.3f}  {im.p_nearest:.2e}   "
            f"{im.d_flag_nearest:.4f}          {','.join(im.flagged_by) or '-'}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--power", type=int, default=0)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    splits = None
    for run in args.runs:
        run_json = json.loads((run / "run.json").read_text())
        with np.load(run / "distilled.npz") as z:
            images, init = z["images"], z["init_indices"]
        t0 = time.time()
        splits = load_private_splits(run_json, data=args.data)
        t1 = time.time()
        res = memorisation_check(images, splits.x_train, splits.x_test, init)
        t2 = time.time()
        print(
            f"{run.name}: init {run_json.get('init', {}).get('mode')}, {len(images)} images; "
            f"data reload {t1 - t0:.1f} s, check {t2 - t1:.1f} s"
        )
        show(res)
    if args.power:
        rng = np.random.default_rng(0)
        idx = rng.choice(len(splits.x_train), size=args.power, replace=False)
        rel = displaced(splits.x_train[idx], 0.09, rng)
        t0 = time.time()
        res = memorisation_check(rel, splits.x_train, splits.x_test, idx)
        print(
            f"power: {args.power} training images displaced by RMS 0.09, with init indices; "
            f"check {time.time() - t0:.1f} s"
        )
        show(res)


if __name__ == "__main__":
    main()
