"""The audit's executors side by side: `--executor local` against `--executor ray` on a local Ray
cluster, and on a two-node Ray cluster on this machine with one node killed mid-audit.

    python benchmarks/bench_ray_audit.py --out /work/bench/scaleout/ray-audit \\
        --distill-steps 30 --shadows 16 --train-steps 300 --baselines naive \\
        --parts local ray twonode resume

One distillation of the built-in digits (``--distill-steps``), copied into one run directory per
part, then ``rcig-release audit RUN --shadows K`` per part (the same audit settings), timed:

* ``local``: the pipelines one after the other in the audit's process;
* ``ray``: ``--executor ray`` (the audit starts a local Ray cluster with every core);
* ``ray1``: the same, one pipeline at a time (``--task-cpus`` = every core), so against
  ``local`` its wall time is Ray's overhead (worker start, object transfers, each worker's
  imports and compilations) without the gain of running pipelines side by side;
* ``twonode``: ``ray start --head`` and ``ray start --address`` (two raylets on 127.0.0.1, one
  CPU each), ``--executor ray --ray-address``; once ``--kill-after`` release shadows are done,
  the second node's raylet is killed with SIGKILL; the audit must finish (Ray re-runs that
  node's tasks on the head node);
* ``resume``: ``--executor ray``, the audit's own process killed with SIGKILL once
  ``--kill-after`` release shadows are done, then ``--resume``.

Each audit.json is compared with the local one, timings aside (they name the executor).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "rcig_release.cli"]


def _strip(obj):
    if isinstance(obj, dict):
        return {
            k: _strip(v) for k, v in obj.items() if k not in ("timings",) and "seconds" not in k
        }
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _diff(a, b, path=""):
    """Paths where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [path]


def _done(run: Path, sub: str = "shadows") -> int:
    d = run / "audit" / sub
    return len(list(d.glob("*.npz"))) if d.is_dir() else 0


def _ray_processes(raylets_only: bool = False) -> set[int]:
    """Processes of this environment's Ray (their command line names its installation)."""
    import ray

    root = str(Path(ray.__file__).parent).encode()
    pids = set()
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            except OSError:
                continue
            first = cmd.split(b"\0")[0]
            if root in cmd and (not raylets_only or first.endswith(b"/raylet")):
                pids.add(int(p))
    return pids


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--distill-steps", type=int, default=30)
    ap.add_argument("--shadows", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--kill-after", type=int, default=4)
    ap.add_argument("--baselines", default="naive,full_data")
    ap.add_argument("--port", type=int, default=6391)
    ap.add_argument("--parts", nargs="+", default=["local", "ray", "ray1", "twonode", "resume"])
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    base = a.out / "digits-run"
    if not (base / "distilled.npz").is_file():
        subprocess.run(
            [*CLI, "distill", "--data", "digits", "--out", base, "--steps", str(a.distill_steps),
             "--quiet", "--force"],
            check=True,
        )  # fmt: skip
    audit = ["--shadows", str(a.shadows), "--train-steps", str(a.train_steps), "--quiet", "--json"]
    audit += ["--baselines", a.baselines]
    rows = {}
    for part in a.parts:
        run = a.out / part / "digits"
        if run.exists():
            shutil.rmtree(run)
        shutil.copytree(base, run, ignore=shutil.ignore_patterns("audit", "checkpoints"))
        t0 = time.perf_counter()
        info: dict = {}
        before = _ray_processes()
        if part == "local":
            subprocess.run([*CLI, "audit", run, *audit], check=True, stdout=subprocess.DEVNULL)
        elif part == "ray":
            subprocess.run(
                [*CLI, "audit", run, *audit, "--executor", "ray"], check=True,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        elif part == "ray1":
            one = ["--executor", "ray", "--task-cpus", str(os.cpu_count() or 1)]
            subprocess.run(
                [*CLI, "audit", run, *audit, *one], check=True, stdout=subprocess.DEVNULL
            )
        elif part == "twonode":
            import re

            ray_bin = str(Path(sys.executable).with_name("ray"))
            # a throw-away cluster on this machine: Ray's token authentication off (the two
            # raylets did not agree on a token here); a real cluster keeps it on
            env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
            ours = _ray_processes()
            h = subprocess.run(
                [ray_bin, "start", "--head", "--port", str(a.port), "--num-cpus", "1",
                 "--include-dashboard", "false", "--disable-usage-stats"],
                check=True, capture_output=True, text=True, env=env,
            )  # fmt: skip
            m = re.search(r"ray start --address='([^']+)'", h.stdout + h.stderr)
            assert m, "no head address"
            addr = m.group(1)
            head = _ray_processes(raylets_only=True)
            subprocess.run(
                [ray_bin, "start", "--address", addr, "--num-cpus", "1", "--disable-usage-stats"],
                check=True, capture_output=True, env=env,
            )  # fmt: skip
            second = _ray_processes(raylets_only=True) - head
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [*CLI, "audit", run, *audit, "--executor", "ray", "--ray-address", addr],
                stdout=subprocess.DEVNULL,
                env=env,
            )
            while proc.poll() is None and _done(run) < a.kill_after:
                time.sleep(0.5)
            info["killed_node_after_shadows"] = _done(run)
            info["killed_at_s"] = time.perf_counter() - t0
            for pid in second:
                os.kill(pid, signal.SIGKILL)
            info["killed_raylets"] = len(second)
            proc.wait()
            _kill(_ray_processes() - ours)  # this cluster's processes, by id
            for _ in range(50):  # until they are gone
                if not _ray_processes() - ours:
                    break
                time.sleep(0.2)
            # `ray start --head` recorded this cluster for later ray.init() calls; it is gone
            current = Path("/tmp/ray/ray_current_cluster")
            if current.is_file() and current.read_text().strip().endswith(f":{a.port}"):
                current.unlink()
            if proc.returncode != 0:
                raise SystemExit(f"twonode audit failed: rc {proc.returncode}")
        elif part == "resume":
            proc = subprocess.Popen(
                [*CLI, "audit", run, *audit, "--executor", "ray"], stdout=subprocess.DEVNULL
            )
            while proc.poll() is None and _done(run) < a.kill_after:
                time.sleep(0.5)
            info["killed_driver_after_shadows"] = _done(run)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(5)
            subprocess.run(
                [*CLI, "audit", run, *audit, "--executor", "ray", "--resume"], check=True,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        info["wall_s"] = time.perf_counter() - t0
        time.sleep(2)  # processes of a cluster that just shut down or was killed
        left = _ray_processes() - before  # e.g. a killed driver's local cluster
        info["ray_processes_left"] = len(left)
        _kill(left)
        result = json.loads((run / "audit" / "audit.json").read_text())
        info["timings"] = result["timings"]
        rows[part] = info
        print(json.dumps({part: info}), flush=True)
    ref = json.loads((a.out / "local" / "digits" / "audit" / "audit.json").read_text())
    print(f"\n{'part':>8} {'wall s':>8} {'shadows s':>9}  audit.json against local (timings aside)")
    for part, info in rows.items():
        got = json.loads((a.out / part / "digits" / "audit" / "audit.json").read_text())
        d = _diff(_strip(ref), _strip(got))
        same = "identical" if not d else f"{len(d)} differing: {', '.join(d[:4])}"
        print(f"{part:>8} {info['wall_s']:>8.1f} {info['timings'].get('shadows', 0):>9.1f}  {same}")
        extra = {k: v for k, v in info.items() if k.startswith("killed")}
        if extra:
            print(f"{'':>8} {extra}")


if __name__ == "__main__":
    main()
