"""Runs hostile-corpus cases through the real CLI, each in a forked child with bounded time and
address space, and records exit code, output, wall time and peak memory (tests/test_hostile_corpus.py).

Usage: ``python tests/hostile_worker.py CASES.json RESULTS.json``. CASES is a list of
``{"id", "args", "env", "cwd"}``. The worker imports the CLI (and JAX, so that no child pays for
it) once, then per case forks: the child sets ``RLIMIT_AS`` to the worker's address space plus
``MEMORY_LIMIT`` and an alarm of ``TIME_LIMIT`` seconds, redirects stdout and stderr to files and
runs ``rcig-release ARGS`` as the console script does; an exception that escapes the command is
printed with its traceback (what a user would see) and exits 70. The parent reads the child's
peak RSS from ``wait4``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

TIME_LIMIT = 60  # seconds per case (issue 22: no hang over 60 s)
MEMORY_LIMIT = 2 * 2**30  # bytes of address space per case beyond the worker's own
UNCAUGHT = 70


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _child(case: dict, out: Path, err: Path, limit: int) -> None:
    from rcig_release.cli.main import app

    try:
        os.chdir(case["cwd"])
        for k, v in case.get("env", {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.alarm(TIME_LIMIT)
        fo = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fe = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fo, 1)
        os.dup2(fe, 2)
        code = 0
        try:
            app(args=case["args"], prog_name="rcig-release", standalone_mode=True)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - what escapes the CLI: the finding itself
            traceback.print_exc()
            code = UNCAUGHT
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        code = UNCAUGHT + 1
    os._exit(code)


def _warm(case: dict) -> None:
    """Runs a case in the worker itself (not measured) so that every child starts warm."""
    import contextlib
    import io

    from rcig_release.cli.main import app

    cwd = os.getcwd()
    os.chdir(case["cwd"])
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            app(args=case["args"], prog_name="rcig-release", standalone_mode=True)
    except SystemExit:
        pass
    finally:
        os.chdir(cwd)


def main(cases_path: str, results_path: str) -> None:
    os.environ.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"})
    import jax  # noqa: F401 - imported once here, before any fork (no backend is started)
    import matplotlib

    matplotlib.use("Agg")
    import gc

    import rcig_release.cli.main  # noqa: F401 - every command registered
    import rcig_release.distill  # noqa: F401
    import rcig_release.release.bundle  # noqa: F401
    import rcig_release.release.verify  # noqa: F401

    cases = json.loads(Path(cases_path).read_text())
    for case in (c for c in cases if c.get("warmup")):  # fonts, caches, lazy imports: once
        _warm(case)
    cases = [c for c in cases if not c.get("warmup")]
    gc.collect()
    gc.freeze()  # the parent's objects are never touched by a child's collector: less copy-on-write
    limit = _vm_size() + MEMORY_LIMIT
    scratch = Path(results_path).parent
    results = []
    for i, case in enumerate(cases):
        out, err = scratch / f"{i}.out", scratch / f"{i}.err"
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(case, out, err, limit)
        _, status, usage = os.wait4(pid, 0)
        results.append(
            {
                "index": i,
                "id": case["id"],
                "code": os.waitstatus_to_exitcode(status),
                "seconds": time.monotonic() - t0,
                "max_rss": usage.ru_maxrss * 1024,  # KiB on Linux
                "stdout": out.read_bytes().decode("utf-8", "replace") if out.exists() else "",
                "stderr": err.read_bytes().decode("utf-8", "replace") if err.exists() else "",
            }
        )
        with open(str(results_path) + ".partial", "a") as f:  # progress, for a reader
            f.write(json.dumps({k: results[-1][k] for k in ("id", "code", "seconds")}) + "\n")
    Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])
