"""The release's memorisation check: error rates, power and cost (docs/benchmarks.md,
"Memorisation check: error rates and power").

    python benchmarks/bench_memorisation.py rates --data digits [--releases 200] [--power 100]
    python benchmarks/bench_memorisation.py rates --data mnist [--releases 200] [--power 100]
    python benchmarks/bench_memorisation.py timing --data mnist --ipc 1 10
    python benchmarks/bench_memorisation.py table --data digits --out DIR
    python benchmarks/bench_memorisation.py runs RUN [RUN ...]

``rates``: releases of 1 image per class (10 images), init records drawn as the pipeline draws
them (``distill.initial_set``: uniform within each class), each judged with its init indices and
without them (as a noise-init run would be). Non-memorising kinds (``--releases`` each): a
held-out test image of each class, and the mean of a random half of each class's training
records. Leak kinds (``--power`` each): the init records as they are (``exact``), flipped,
shifted by 1 or 2 pixels (zero-filled, direction at random), 0.6 x init + 0.4 x another record of
the class (``blend``), init + N(0, 0.2^2) per pixel (``noise``, then clipped and 8-bit rounded
like every release), one copy among nine held-out images (``one_in_ten``), and the mean of three
records of the class other than the init record (``mean3``). The held-out split is cut in two:
the check's null uses one half, released held-out images come from the other; the reference and
the null are prepared once (``memorisation.prepare``) and reused, as the release command would
compute them for each release. Prints a table with Clopper-Pearson 95 % intervals.

``timing``: the whole check (``memorisation_check``: reference, null, both tests) on a release
of ``ipc`` copies per class with init indices; wall and CPU seconds.

``table``: issue 21's table end to end: for each kind, a run directory (``distilled.npz`` with the
release, ``run.json`` whose config draws the init set with ``distill.initial_set``, placeholder
``eval.json`` and ``audit/audit.json`` from ``tests/release_fixtures.py``) released with
``rcig-release release``'s library call, ``policies/default.toml`` and ``--override``; once as a
real-init run (its init indices recorded) and once as a noise-init run (indices -1).

``runs``: the check on distilled run directories (their images and init indices), one line per
image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from rcig_release.release import memorisation as mem
from rcig_release.release.safety import load_private_splits

MNIST = Path("/work/shared/data/mnist.npz")
NULL_KINDS = ("heldout", "classmean")
LEAK_KINDS = (
    "exact",
    "flip",
    "shift1",
    "shift2",
    "one_in_ten",
    "blend",
    "noise",
    "mean3",
)


def load(name: str):
    """(x_train, y_train, x_test, y_test) float32 [N,H,W,C] in [0, 1]."""
    if name == "mnist":
        z = np.load(MNIST)
        f = lambda a: (a.astype(np.float32) / 255.0)[..., None]  # noqa: E731
        return f(z["x_train"]), z["y_train"], f(z["x_test"]), z["y_test"]
    from rcig_release.data import load_dataset

    ds = load_dataset(name, seed=0)
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


def shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Zero-filled shift of one image [H, W, C]: ``out[y, x] = in[y - dy, x - dx]``."""
    out = np.zeros_like(x)
    h, w = x.shape[:2]
    out[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = x[
        max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)
    ]
    return out


class Releases:
    """Draws the benchmark's releases (module docstring)."""

    def __init__(self, xt, yt, xh, yh, seed: int):
        self.xt, self.yt, self.xh, self.yh = xt, yt, xh, yh
        self.rng = np.random.default_rng(seed)
        self.classes = int(yt.max()) + 1
        self.by_class = [np.flatnonzero(yt == c) for c in range(self.classes)]
        self.held_by_class = [np.flatnonzero(yh == c) for c in range(self.classes)]
        self.copied = -1  # the copy's index in the last one_in_ten release

    def init(self) -> np.ndarray:
        return np.array([self.rng.choice(p) for p in self.by_class])

    def other(self, c: int, exclude) -> int:
        while True:
            j = int(self.rng.choice(self.by_class[c]))
            if j not in exclude:
                return j

    def make(self, kind: str, init: np.ndarray) -> np.ndarray:
        rng, xt = self.rng, self.xt
        t = xt[init].copy()
        if kind == "heldout":
            return np.stack([self.xh[rng.choice(p)] for p in self.held_by_class])
        if kind == "classmean":
            return np.stack(
                [xt[rng.choice(p, len(p) // 2, replace=False)].mean(0) for p in self.by_class]
            )
        if kind == "exact":
            return t
        if kind == "flip":
            return t[:, :, ::-1]
        if kind in ("shift1", "shift2"):
            s = 1 if kind == "shift1" else 2
            moves = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
            moves = [m for m in moves if max(abs(m[0]), abs(m[1])) == s]
            return np.stack([shift(img, *moves[rng.integers(len(moves))]) for img in t])
        if kind == "blend":
            return np.stack(
                [0.6 * xt[i] + 0.4 * xt[self.other(c, {i})] for c, i in enumerate(init)]
            )
        if kind == "noise":
            return t + 0.2 * rng.standard_normal(t.shape).astype(np.float32)
        if kind == "one_in_ten":
            out = self.make("heldout", init)
            k = int(rng.integers(len(init)))
            out[k] = t[k]
            self.copied = k
            return out
        if kind == "mean3":
            return np.stack([xt[self._three(c, i)].mean(0) for c, i in enumerate(init)])
        raise ValueError(kind)

    def _three(self, c: int, i: int) -> list[int]:
        pool = self.by_class[c][self.by_class[c] != i]
        return list(self.rng.choice(pool, 3, replace=False))


def ci(k: int, n: int) -> str:
    lo, hi = binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"[{lo:.3f}, {hi:.3f}]"


def rates(args) -> None:
    xt, yt, xh, yh = load(args.data)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(xh))
    null_h, rel_h = perm[: len(xh) // 2], perm[len(xh) // 2 :]
    cfg = mem.CheckConfig()
    n_img = int(yt.max()) + 1
    level = cfg.alphas(True)[0] / n_img  # the smaller level: its null serves both (prefix)
    t0, c0 = time.time(), time.process_time()
    prep = mem.prepare(xt, xh[null_h], level, cfg)
    print(
        f"{args.data}: |T| = {len(xt)}, null from {len(null_h)} held-out images "
        f"(+ leave-one-out training records), {prep.null.size} pseudo-releases "
        f"({prep.null.n_heldout} held-out); prepared in {time.time() - t0:.0f} s wall, "
        f"{time.process_time() - c0:.0f} s CPU; regime: "
        f"{'exhaustive' if prep.ref.exhaustive else 'prefiltered'}",
        flush=True,
    )
    gen = Releases(xt, yt, xh[rel_h], yh[rel_h], args.seed + 1)
    rows = []
    kinds = [(k, args.releases) for k in NULL_KINDS] + [(k, args.power) for k in LEAK_KINDS]
    if args.kinds:
        kinds = [(k, n) for k, n in kinds if k in args.kinds]
    for kind, n in kinds:
        tally = {True: [0, 0, 0, 0], False: [0, 0, 0, 0]}  # refused, nearest, init, images
        t0 = time.time()
        for _ in range(n):
            init = gen.init()
            x = gen.make(kind, init)
            for with_init in (True, False):
                res = mem.run_check(prep, x, xt, init if with_init else None, yt)
                t = tally[with_init]
                t[0] += not res.passed
                t[1] += res.flagged_by("nearest") > 0
                t[2] += res.init_rejected
                if kind == "one_in_ten":  # the copy itself
                    t[3] += "nearest" in res.images[gen.copied].flagged_by
                else:
                    t[3] += res.flagged_by("nearest")
        per = 1 if kind == "one_in_ten" else n_img  # altered images per release
        for with_init in (True, False):
            r, near, ini, imgs = tally[with_init]
            rows.append((kind, with_init, n, r, near, ini, imgs, per * n))
            print(
                f"  {kind:10s} init {'yes' if with_init else 'no ':3s} releases {n:4d} refused "
                f"{r:4d} ({r / n:.3f} {ci(r, n)}) nearest {near:4d} init {ini:4d} images "
                f"flagged by nearest {imgs}/{per * n}   [{time.time() - t0:.0f} s]",
                flush=True,
            )
    print()
    print(
        "| data | release | init indices | releases | refused | rate | 95 % CI | by nearest-record "
        "tests | by init test | altered images flagged by nearest-record tests |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, with_init, n, r, near, ini, imgs, tot in rows:
        print(
            f"| {args.data} | {kind} | {'yes' if with_init else 'no'} | {n} | {r} | {r / n:.3f} | "
            f"{ci(r, n)} | {near} | {ini if with_init else '-'} | {imgs}/{tot} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows))


def timing(args) -> None:
    xt, yt, xh, _ = load(args.data)
    rng = np.random.default_rng(args.seed)
    for ipc in args.ipc:
        init = np.concatenate(
            [
                rng.choice(np.flatnonzero(yt == c), ipc, replace=False)
                for c in range(int(yt.max()) + 1)
            ]
        )
        t0, c0 = time.time(), time.process_time()
        res = mem.memorisation_check(xt[init], xt, xh, init, train_labels=yt)
        wall, cpu = time.time() - t0, time.process_time() - c0
        print(
            f"{args.data} {ipc} ipc ({len(init)} images, init indices): check {wall:.1f} s wall, "
            f"{cpu:.1f} s CPU, load average {os.getloadavg()[0]:.1f}; null "
            f"{res.null_heldout} held-out + {res.null_train} leave-one-out; {res.describe()}",
            flush=True,
        )


def table(args) -> None:
    from rcig_release.config import DistillConfig
    from rcig_release.data import load_dataset
    from rcig_release.distill import initial_set
    from rcig_release.errors import InputError
    from rcig_release.release.bundle import ReleaseRefused, release
    from rcig_release.release.hashing import file_sha256

    # audit_dict is a test fixture (a placeholder audit), not product code: it lives in the
    # repository's tests/ directory, which is not installed, so put that directory on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from release_fixtures import audit_dict

    ds = load_dataset(args.data, seed=0)
    xt, yt = ds.x_train, ds.y_train
    policy = Path(__file__).resolve().parents[1] / "policies" / "default.toml"
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    rng_seed = args.seed
    print("| release | init indices | outcome |")
    print("|---|---|---|")
    for kind in NULL_KINDS + LEAK_KINDS:
        for mode in ("real", "noise"):
            cfg = DistillConfig(ipc=1, init="real", seed=rng_seed)
            drawn = initial_set(cfg, xt, yt, ds.num_classes)[2]
            gen = Releases(xt, yt, ds.x_test, ds.y_test, rng_seed + 1)
            images = np.clip(gen.make(kind, drawn), 0, 1).astype(np.float32)
            init = drawn if mode == "real" else np.full(len(drawn), -1)
            run = root / f"{kind}-{mode}"
            (run / "audit").mkdir(parents=True, exist_ok=True)
            labels = np.full((len(images), ds.num_classes), 0.0, np.float32)
            labels[np.arange(len(images)), np.arange(len(images))] = 1.0
            np.savez(
                run / "distilled.npz",
                images=images,
                labels=labels,
                classes=np.array(ds.classes, dtype=str),
                images_model=images,
                log_temp=np.float32(0.0),
                init_indices=init.astype(np.int64),
            )
            run_json = {
                "config": {"ipc": 1, "init": mode, "seed": rng_seed, "steps": 0},
                "data": {
                    "source": args.data,
                    "fingerprint": ds.fingerprint,
                    "split_seed": ds.split_seed,
                },
                "init": {"mode": mode, "indices": init.tolist()},
            }
            (run / "run.json").write_text(json.dumps(run_json))
            eval_json = {"arch": "convnet", "models": 5, "accuracy_mean": 0.8, "accuracy_std": 0.0}
            (run / "eval.json").write_text(json.dumps(eval_json))
            audit = audit_dict(file_sha256(run / "distilled.npz"), images, xt, leak=False)
            (run / "audit" / "audit.json").write_text(json.dumps(audit))
            out = root / f"bundle-{kind}-{mode}"
            t0 = time.time()
            try:
                release(run, policy, out, override="issue 21 table", load_private=lambda s, k: ds)
                outcome = f"**published** ({time.time() - t0:.0f} s)"
            except ReleaseRefused as e:
                outcome = (
                    f"refused, exit 3: {str(e).split('; no bundle')[0]} ({time.time() - t0:.0f} s)"
                )
            except InputError as e:
                outcome = f"exit 2: {e}"
            print(
                f"| {kind} | {'yes' if mode == 'real' else 'no (noise-init run)'} | {outcome} |",
                flush=True,
            )
            rng_seed += 1


def show(res) -> None:
    print(f"  {res.describe()}")
    print(f"  {res.coverage()}")
    print("  image  p_nearest  gap    lowpass  blend  d_nearest  init rank/class  flagged")
    for im in res.images:
        rank = "-" if im.init_rank is None else f"{im.init_rank}/{im.init_class_size}"
        print(
            f"  {im.index:>5}  {im.p_nearest:.2e}   {im.stats['gap']:.3f}  "
            f"{im.stats['lowpass']:.3f}    {im.stats['blend']:.3f}  {im.d_nearest:.4f}     "
            f"{rank:>15}  {','.join(im.flagged_by) or '-'}"
        )


def runs(args) -> None:
    for run in args.runs:
        run_json = json.loads((run / "run.json").read_text())
        with np.load(run / "distilled.npz") as z:
            images, init = z["images"], z["init_indices"]
        t0 = time.time()
        splits = load_private_splits(run_json, data=args.data)
        t1 = time.time()
        res = mem.memorisation_check(
            images, splits.x_train, splits.x_test, init, train_labels=splits.y_train
        )
        print(
            f"{run.name}: init {run_json.get('init', {}).get('mode')}, {len(images)} images; "
            f"data reload {t1 - t0:.1f} s, check {time.time() - t1:.1f} s"
        )
        show(res)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rates")
    r.add_argument("--data", default="digits", choices=("digits", "mnist"))
    r.add_argument("--releases", type=int, default=200)
    r.add_argument("--power", type=int, default=100)
    r.add_argument("--kinds", nargs="*")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json")
    t = sub.add_parser("timing")
    t.add_argument("--data", default="mnist", choices=("digits", "mnist"))
    t.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    t.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("table")
    b.add_argument("--data", default="digits")
    b.add_argument("--out", required=True)
    b.add_argument("--seed", type=int, default=0)
    u = sub.add_parser("runs")
    u.add_argument("runs", nargs="+", type=Path)
    u.add_argument("--data", default=None)
    args = ap.parse_args()
    {"rates": rates, "timing": timing, "table": table, "runs": runs}[args.cmd](args)


if __name__ == "__main__":
    main()
