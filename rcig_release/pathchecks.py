"""Checks of the command line's paths that run before any data or JAX is loaded.

Each command calls these first, so a mistyped path, an existing output or a missing audit is
reported within a second (one line, exit 2) instead of after the data or JAX have loaded. They
read only file-system metadata and import nothing heavy (no NumPy, no JAX); the library repeats
every check where it acts (``rundir.prepare_out``, ``inputs.load_release_inputs``, ...), so these
are an early answer, never the only guard.
"""

from __future__ import annotations

import re
from pathlib import Path

from rcig_release.errors import InputError


def distill_out(out: Path | None, *, resume: bool, force: bool, data: str | None = None) -> None:
    """``distill --out``: apart from the data (``data.paths.check_out_apart``); not a file; not a
    non-empty directory unless --resume or --force (the same rule and words as
    ``rundir.prepare_out``); --resume needs an existing run."""
    if out is None:
        return
    if data is not None and not resume:  # is, is inside or contains the data (data/paths.py)
        from rcig_release.data.paths import check_out_apart

        check_out_apart(data, out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if resume:
        if not out.is_dir():
            raise InputError(f"--resume: run directory not found: {out}")
        return
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(
            f"--out {out} exists and is not empty; use --resume to continue it "
            "or --force to start over (the old directory is kept as a backup)"
        )


def run_dir(
    run: Path, *, evaluated: bool = False, audited: bool = False, name_only: bool = False
) -> None:
    """A finished distillation run (distilled.npz, run.json); with ``evaluated``, its eval.json;
    with ``audited``, its audit/audit.json. Names the command that makes what is missing.
    ``name_only``: a missing directory is named by its last part (as ``release`` names it)."""
    if not run.is_dir():
        raise InputError(f"run directory not found: {(run.name or run) if name_only else run}")
    for name in ("distilled.npz", "run.json"):
        if not (run / name).is_file():
            raise InputError(f"{run / name} is missing (is {run} a finished distillation run?)")
    if evaluated and not (run / "eval.json").is_file():
        raise InputError(
            f"{run / 'eval.json'} is missing (run `rcig-release evaluate {run}` first)"
        )
    if audited and not (run / "audit" / "audit.json").is_file():
        raise InputError(
            f"{run / 'audit' / 'audit.json'} is missing (run `rcig-release audit {run}` first)"
        )


def new_out(out: Path) -> None:
    """``release --out``: must not exist (nothing is ever overwritten)."""
    if out.exists() or out.is_symlink():
        raise InputError(f"output already exists, refusing to overwrite: {out}")


def existing_file(path: Path | None, option: str) -> None:
    """An input file given by an option (a key, a config) must exist."""
    if path is not None and not path.is_file():
        raise InputError(f"{option} {path}: no such file")


def data_spec(spec: str | None) -> None:
    """``--data``: a built-in or downloadable name, or an existing file or folder (the rest of
    ``data.load_dataset``'s checks run when it loads)."""
    if spec is None or spec in ("digits", "mnist", "fashion-mnist", "cifar10"):
        return
    if (
        spec.strip()
        and Path(spec).suffix.lower() == ".npz"
        and not Path(spec).expanduser().exists()
    ):
        raise InputError(f"data file not found: {spec}")  # as data.sources words it
    if not spec.strip() or not Path(spec).expanduser().exists():
        raise InputError(
            f"data source not found: {spec} (expected digits, mnist, fashion-mnist, "
            "cifar10, an .npz file or an image folder)"
        )


# an SPDX licence id (the card's `license`): what `release --license` accepts
SPDX = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}")  # fullmatch: "$" would pass "MIT\n"


def license_id(spdx: str | None) -> None:
    if spdx is not None and not SPDX.fullmatch(spdx):
        raise InputError(f"--license {spdx!r} is not an SPDX licence id")
