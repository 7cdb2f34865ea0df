"""Utility of the DP mechanisms (issue #20): distill + evaluate through the product's CLI.

For every combination of the given data sets, ipc, ε, δ and mechanisms it runs

    rcig-release distill --data D --ipc I --dp-epsilon E --dp-delta δ --dp-mechanism M \\
        --out OUT/<cell> --quiet [--config TOML] [--steps S]
    rcig-release evaluate OUT/<cell> --json [--models K]

(one at a time), appends one JSON line per cell to OUT/results.jsonl (so an interrupted sweep
keeps what it measured; a cell already there is skipped) and prints the table with NDPDC's and
Dosser's published 10-ipc, ε = 1 ConvNet accuracies beside it.

    python benchmarks/bench_dp_utility.py --data ../shared/data/mnist.npz --ipc 10 --eps 1 \\
        --delta 1e-5 --mechanism features --out /work/bench/dp-utility/sweep
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

ANCHORS = {"mnist": (93.1, 95.3), "cifar10": (39.4, 44.2)}  # NDPDC, Dosser: 10 ipc, ε = 1


def cell_name(data: str, ipc: int, eps: float, delta: float, mech: str, tag: str) -> str:
    return f"{Path(data).stem}-ipc{ipc}-eps{eps:g}-delta{delta:g}-{mech}{'-' + tag if tag else ''}"


def run_cell(args: argparse.Namespace, data: str, ipc: int, eps: float, delta: float, mech: str):
    name = cell_name(data, ipc, eps, delta, mech, args.tag)
    out = args.out / name
    cli = [sys.executable, "-m", "rcig_release.cli"]
    cmd = [*cli, "distill", "--data", data, "--ipc", str(ipc), "--dp-epsilon", str(eps)]
    cmd += ["--dp-delta", str(delta), "--dp-mechanism", mech, "--out", str(out), "--quiet"]
    if args.config:
        cmd += ["--config", str(args.config)]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    if out.exists():
        cmd += ["--force"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    t_distill = time.perf_counter() - t0
    ev_cmd = [*cli, "evaluate", str(out), "--json", "--models", str(args.models)]
    t0 = time.perf_counter()
    ev = json.loads(subprocess.run(ev_cmd, check=True, capture_output=True, text=True).stdout)
    t_eval = time.perf_counter() - t0
    rj = json.loads((out / "run.json").read_text())
    cell = (name, data, ipc, eps, delta, mech)
    return result_row(cell, rj, ev, t_distill, t_eval) | {"command": " ".join(cmd[2:])}


def result_row(cell: tuple, rj: dict, ev: dict, t_distill: float, t_eval: float) -> dict:
    """One results.jsonl row from a cell's run.json and evaluation (both ways of running it)."""
    name, data, ipc, eps, delta, mech = cell
    return {
        "cell": name,
        "data": Path(data).stem,
        "ipc": ipc,
        "epsilon_target": eps,
        "delta": delta,
        "mechanism": mech,
        "epsilon": rj["dp"]["epsilon"],
        "noise_multiplier": rj["dp"]["noise_multiplier"],
        "steps": rj["config"]["steps"],
        "width": rj["config"]["width"],
        "accuracy_mean": 100 * ev["accuracy_mean"],
        "accuracy_std": 100 * ev["accuracy_std"],
        "models": ev["models"],
        "n_test": ev["n_test"],
        "distill_seconds": t_distill,
        "release_seconds": rj.get("timings", {}).get("release_seconds"),
        "evaluate_seconds": t_eval,
    }


class SharedStatistic:
    """``--shared-statistic`` (features only): the noise-free statistic is computed once per data
    set in this process and every cell releases it with its own fresh secret noise draw, so the
    feature pass over the training split (the mechanism's one read of the data, identical for
    every cell of a data set: same networks, same seed) is not repeated. Everything else is the
    product's own path, in process: ``pipeline.distill_run`` writes the run directory and
    ``evaluate.evaluate_run`` evaluates it. Each cell's release is still a single Gaussian
    release of its own σ; only the benchmark's wall time differs from separate runs."""

    def __init__(self) -> None:
        self.cache: dict[tuple, object] = {}
        self.seconds: dict[tuple, float] = {}

    def install(self) -> None:
        from rcig_release.rcig import dpdistill, dpstat

        real = dpdistill.statistic

        def release(s, x_model, y, num_classes, noise_multiplier):
            key = (s, x_model.shape, int(len(y)), int(num_classes))
            if key not in self.cache:
                t0 = time.perf_counter()
                self.cache[key] = real(s, x_model, y, num_classes)
                self.seconds[key] = time.perf_counter() - t0
            return dpstat.release(self.cache[key], noise_multiplier, s.clip)

        dpdistill.private_release = release


def run_cell_in_process(
    args: argparse.Namespace, data: str, ipc: int, eps: float, delta: float, mech: str
) -> dict:
    from rcig_release.config import EvalConfig, load_toml, make_distill_config
    from rcig_release.evaluate import evaluate_run
    from rcig_release.pipeline import distill_run

    name = cell_name(data, ipc, eps, delta, mech, args.tag)
    out = args.out / name
    values = dict(ipc=ipc, dp_epsilon=eps, dp_delta=delta, dp_mechanism=mech)
    if args.steps is not None:
        values["steps"] = args.steps
    if args.seed is not None:
        values["seed"] = args.seed
    cfg = make_distill_config("cpu", load_toml(args.config) if args.config else None, **values)
    t0 = time.perf_counter()
    rj = distill_run(out, data, cfg, force=out.exists())
    t_distill = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate_run(out, EvalConfig(models=args.models))
    t_eval = time.perf_counter() - t0
    return result_row((name, data, ipc, eps, delta, mech), rj, ev, t_distill, t_eval) | {
        "shared_statistic": True,
        "command": f"bench_dp_utility.py --shared-statistic ({name})",
    }


def table(rows: list[dict]) -> str:
    head = (
        "| data | ipc | ε (proven) | δ | mechanism | σ | steps | accuracy % (models) | "
        "distill s | evaluate s | NDPDC / Dosser (10 ipc, ε = 1) |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        nd = ANCHORS.get(r["data"])
        shared = " (shared statistic)" if r.get("shared_statistic") else ""
        lines.append(
            f"| {r['data']}{shared} | {r['ipc']} | {r['epsilon']:.5g} | {r['delta']:g} | {r['mechanism']} "
            f"| {r['noise_multiplier']:.4g} | {r['steps']} | {r['accuracy_mean']:.2f} ± "
            f"{r['accuracy_std']:.2f} ({r['models']}) | {r['distill_seconds']:.0f} | "
            f"{r['evaluate_seconds']:.0f} | {f'{nd[0]} / {nd[1]}' if nd else '–'} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--ipc", type=int, nargs="+", default=[10])
    p.add_argument("--eps", type=float, nargs="+", default=[1.0])
    p.add_argument("--delta", type=float, nargs="+", default=[1e-5])
    p.add_argument("--mechanism", nargs="+", default=["features"])
    p.add_argument("--models", type=int, default=5)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--config", type=Path, default=None, help="TOML of DistillConfig values")
    p.add_argument("--tag", default="", help="suffix of the cell names")
    p.add_argument(
        "--plan",
        nargs="+",
        default=None,
        help="IPC:EPS pairs in run order (instead of --ipc, --eps)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--table-only", action="store_true", help="print the table of results.jsonl")
    p.add_argument(
        "--shared-statistic",
        action="store_true",
        help="features: one feature pass per data set, a fresh release per cell (in process)",
    )
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = (
        {json.loads(line)["cell"]: json.loads(line) for line in results.read_text().splitlines()}
        if results.is_file()
        else {}
    )
    if args.shared_statistic:
        SharedStatistic().install()
    if not args.table_only:
        # ipc, then ε, then δ, then mechanism, the data sets innermost: the first cells are the
        # goal rows of every data set (10 ipc, ε = 1), and an interrupted sweep keeps them;
        # --plan IPC:EPS ... replaces the ipc × ε product by that order
        pairs = (
            [(int(p.split(":")[0]), float(p.split(":")[1])) for p in args.plan]
            if args.plan
            else list(itertools.product(args.ipc, args.eps))
        )
        for (ipc, eps), delta, mech, data in itertools.product(
            pairs, args.delta, args.mechanism, args.data
        ):
            name = cell_name(data, ipc, eps, delta, mech, args.tag)
            if name in done:
                continue
            cell = run_cell_in_process if args.shared_statistic else run_cell
            row = cell(args, data, ipc, eps, delta, mech)
            done[name] = row
            with results.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(table(list(done.values())))


if __name__ == "__main__":
    main()
