"""`rcig-release audit RUN`: membership-inference audit and copy check of a distilled release.

Thin: parse the flags into an ``AuditConfig``, call ``rcig_release.audits.run_audit``, render a rich
table (or ``--json``). No JAX import here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rcig_release.cli.progress import print_device, stage_progress
from rcig_release.errors import InputError

ATTACK_NAMES = ("loss", "shadow", "lira_online", "lira_offline", "rmia", "nearest")
# The closing line when no gallery was asked for: where the custodian-only gallery comes from.
GALLERY_HINT = (
    "private gallery: not written; rcig-release audit RUN --private-gallery DIR (DIR outside RUN) "
    "writes the released images closest to a private training record, each beside that record: "
    "private pixels, for the custodian only; never share it or put it in a bundle"
)


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def _ci(ci: Any) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _p(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.1e}" if v < 1e-3 else f"{v:.3f}")


def summary_table(audit: dict) -> Table:
    """The game (what the gate judges): per pipeline and attack, pooled AUC and the p-values of
    "at chance", the ε lower bound and the largest the sizes could show; the init group's AUC."""
    game = audit.get("game", {})
    eps = game.get("epsilon", {})
    t = Table(
        title=f"Membership game: {audit['n_shadows']} shadow pipelines as targets in two "
        f"folds, {audit['records']['members'] + audit['records']['nonmembers']} "
        f"records (ε: δ = {eps.get('delta')}, joint confidence {eps.get('confidence')})"
    )
    for col in (
        "pipeline",
        "attack",
        "AUC",
        "p AUC",
        "p TPR@1%",
        "p TPR@0.1%",
        "ε LB (max)",
        "init AUC (p)",
    ):
        t.add_column(col, justify="left" if col in ("pipeline", "attack") else "right")
    rows = [("release", game)]
    rows += [(k, v.get("game", {})) for k, v in audit.get("baselines", {}).items()]
    for pipe, g in rows:
        for name, a in (g.get("attacks") or {}).items():
            al, init = a["groups"]["all"], a["groups"].get("init")
            pv = al["p_value"]
            e = al.get("epsilon_lower_bound")
            t.add_row(
                pipe,
                name,
                _fmt(al["auc"], pct=False),
                _p(pv["auc"]),
                _p(pv["tpr_at_fpr_0.01"]),
                _p(pv["tpr_at_fpr_0.001"]),
                "-" if e is None else f"{e:.2f} ({al['max_epsilon']:.2f})",
                f"{_fmt(init['auc'], pct=False)} ({_p(init['p_value']['auc'])})" if init else "-",
            )
        t.add_section()
    return t


def release_table(audit: dict) -> Table:
    """The custodian's release on its fixed members and non-members (descriptive, no ε)."""
    r = audit["records"]
    t = Table(
        title=f"This release: {r['members']} members / {r['nonmembers'] - r.get('calibration', 0)}"
        f" non-members, thresholds on {r.get('calibration', 0)} calibration images"
    )
    for col in ("attack", "AUC", "TPR@0.1%FPR", "TPR@1%FPR", "init AUC"):
        t.add_column(col, justify="left" if col == "attack" else "right")
    for name, a in audit["attacks"].items():
        init = a.get("groups", {}).get("init")
        t.add_row(
            name,
            _fmt(a["auc"], pct=False),
            _fmt(a["tpr_at_fpr"]["0.001"]) + _ci(a["tpr_at_fpr_ci"]["0.001"]),
            _fmt(a["tpr_at_fpr"]["0.01"]) + _ci(a["tpr_at_fpr_ci"]["0.01"]),
            _fmt(init["auc"], pct=False) if init else "-",
        )
    return t


def json_summary(audit: dict) -> dict:
    """The headline numbers (the full report is RUN/audit/audit.json)."""

    def brief(game: dict) -> dict:
        out = {}
        for n, a in (game.get("attacks") or {}).items():
            al = a["groups"]["all"]
            out[n] = {
                "auc": al["auc"],
                "p_value": al["p_value"],
                "epsilon_lower_bound": al.get("epsilon_lower_bound"),
                "max_epsilon": al.get("max_epsilon"),
                "init": (
                    {"auc": a["groups"]["init"]["auc"], "p_value": a["groups"]["init"]["p_value"]}
                    if "init" in a["groups"]
                    else None
                ),
            }
        return out

    cc = audit["copy_check"]
    return {
        "run_sha256": audit["run_sha256"],
        "n_shadows": audit["n_shadows"],
        "records": audit["records"],
        "game": brief(audit.get("game", {})),
        "this_release": {
            n: {"auc": a["auc"], "tpr_at_fpr": a["tpr_at_fpr"]} for n, a in audit["attacks"].items()
        },
        "baselines": {k: brief(v.get("game", {})) for k, v in audit.get("baselines", {}).items()},
        "copy_check": {
            "near_copies": cc["near_copies"],
            "threshold": cc["threshold"],
            "n_released": cc["n_released"],
        },
        **({"dp": audit["dp"]} if audit.get("dp") is not None else {}),
    }


def dp_line(dp: dict) -> str:
    """The DP run's proven ε beside the game's empirical lower bound at the same δ."""
    return (
        f"differential privacy: proven ε = {dp['proven_epsilon']:.4g} at δ = {dp['delta']:g}; "
        f"empirical ε lower bound at that δ = {dp['empirical_epsilon_lower_bound']:.4g} "
        f"(largest these sizes can show {dp['largest_showable_epsilon']:.4g}, joint confidence "
        f"{dp['confidence']:g}): {dp['verdict']}"
    )


def check_dp(audit: dict) -> None:
    """Exit 4 (``DpViolation``) when the audit's verdict is dp-violation; the files are written."""
    from rcig_release.errors import DpViolation
    from rcig_release.release.dp import VERDICT_VIOLATION, VIOLATION_MEANING

    dp = audit.get("dp")
    if dp is not None and dp.get("verdict") == VERDICT_VIOLATION:
        raise DpViolation(
            f"{VERDICT_VIOLATION}: empirical ε lower bound "
            f"{dp['empirical_epsilon_lower_bound']:.4g} > proven ε "
            f"{dp['proven_epsilon']:.4g} at δ {dp['delta']:g}; {VIOLATION_MEANING}. "
            "release refuses this run, even with --override"
        )


def register(app: typer.Typer) -> None:
    # Imported here, not at module level: `python -m rcig_release.cli.main` would otherwise import
    # main twice and find this module half-initialised.
    from rcig_release.cli.main import handle_errors

    @app.command("audit")
    @handle_errors
    def audit(
        run: Annotated[Path, typer.Argument(help="Run directory written by `distill`.")],
        shadows: Annotated[
            int, typer.Option(help="Shadow pipelines (even; each record IN for half).")
        ] = 16,
        targets: Annotated[
            int, typer.Option(help="Networks trained on the release (and per shadow).")
        ] = 4,
        records: Annotated[
            int, typer.Option(help="Up to this many members and as many non-members.")
        ] = 500,
        attacks: Annotated[
            str | None,
            typer.Option(
                help=f"Comma-separated subset of: {', '.join(ATTACK_NAMES)} (default: all)."
            ),
        ] = None,
        baselines: Annotated[
            str, typer.Option(help="Comma-separated: naive, full_data, or none.")
        ] = "naive,full_data",
        data: Annotated[
            str | None,
            typer.Option(
                help="Data source if run.json's is not reachable (must have the run's fingerprint; default: run.json's source)."
            ),
        ] = None,
        resume: Annotated[
            bool, typer.Option(help="Continue an interrupted audit (finished shadows are kept).")
        ] = False,
        json_out: Annotated[
            bool, typer.Option("--json", help="Print the summary as JSON (default: off).")
        ] = False,
        private_gallery: Annotated[
            Path | None,
            typer.Option(
                help="Write the closest released/private pairs as PNGs here (outside RUN; contains private images; default: none written)."
            ),
        ] = None,
        seed: Annotated[int, typer.Option(help="Audit seed (records, keep matrix, shadows).")] = 0,
        width: Annotated[
            int | None, typer.Option(help="Downstream network width (default: the run's).")
        ] = None,
        train_steps: Annotated[
            int | None, typer.Option(help="Downstream training steps (default: evaluate protocol).")
        ] = None,
        full_steps: Annotated[
            int, typer.Option(help="Training steps of the full-data baseline's network.")
        ] = 300,
        shadow_lrs: Annotated[
            str,
            typer.Option(
                help="run: shadows start from the run's tuned learning rates; tune: each shadow re-tunes."
            ),
        ] = "run",
        executor: Annotated[
            str,
            typer.Option(
                help="Where the shadow pipelines run: local (here, one after the other) or ray "
                "(one Ray task per pipeline; needs pip install 'rcig-release\\[cluster]')."
            ),
        ] = "local",
        ray_address: Annotated[
            str | None,
            typer.Option(
                help="Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT; default: start a "
                "local one for this audit)."
            ),
        ] = None,
        task_cpus: Annotated[
            float | None,
            typer.Option(help="CPUs one Ray task asks for (default: 1 where no GPU is asked)."),
        ] = None,
        task_gpus: Annotated[
            float | None,
            typer.Option(
                help="GPUs one Ray task asks for (default: 1 where the cluster has GPUs, else 0)."
            ),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option(
                help="N > 1: run N pipelines at a time on a local Ray cluster of N CPUs (an alias "
                "of --executor ray; needs the cluster extra; default: one at a time, here)."
            ),
        ] = None,
        baselines_from: Annotated[
            Path | None,
            typer.Option(
                help="Reuse the naive and full-data baseline pipelines of another run's audit of "
                "the same data (same fingerprint, records and inclusion matrix; default: run them)."
            ),
        ] = None,
        quiet: Annotated[
            bool, typer.Option("--quiet", "-q", help="No progress bars (default: off).")
        ] = False,
        force: Annotated[
            bool,
            typer.Option(
                help="Audit even when release's memorisation check, run first, flags the set "
                "(default: stop there with exit 3: no audit can make release publish it)."
            ),
        ] = False,
    ) -> None:
        """Audit a distilled release: membership-inference attacks, copy check, baselines."""
        from rcig_release import pathchecks
        from rcig_release.audits.executors import Executor, for_workers

        execu = Executor(
            kind=executor, address=ray_address, task_cpus=task_cpus, task_gpus=task_gpus
        )
        for_workers(workers, execu).check()  # options first: a missing extra before any work
        pathchecks.run_dir(run)  # before any data or JAX is loaded
        pathchecks.data_spec(data)
        print_device(Console(stderr=True))
        from rcig_release.audits.config import AuditConfig

        chosen = (
            tuple(a.strip() for a in attacks.split(",") if a.strip()) if attacks else ATTACK_NAMES
        )
        base = tuple(b.strip() for b in baselines.split(",") if b.strip() and b.strip() != "none")
        cfg = AuditConfig(
            shadows=shadows,
            targets=targets,
            records=records,
            attacks=chosen,
            baselines=base,
            seed=seed,
            width=width,
            train_steps=train_steps,
            full_steps=full_steps,
            shadow_lrs=shadow_lrs,
        )
        console = Console(stderr=True)
        if private_gallery is not None and not str(private_gallery).strip():
            raise InputError("--private-gallery needs a directory")
        from rcig_release.audits.runner import run_audit

        with stage_progress(console, enabled=not quiet and not json_out) as progress:
            result = run_audit(
                run,
                cfg,
                data=data,
                resume=resume,
                private_gallery=private_gallery,
                workers=workers,
                progress=progress,
                stop_if_unreleasable=not force,
                executor=execu,
                baselines_from=baselines_from,
            )
        if json_out:
            typer.echo(json.dumps(json_summary(result), indent=2, sort_keys=True))
            check_dp(result)
            return
        out = Console()
        out.print(summary_table(result))
        out.print(release_table(result))
        cc = result["copy_check"]
        style = "bold red" if cc["near_copies"] else "green"
        out.print(
            f"[{style}]copy check: {cc['near_copies']} of {cc['n_released']} released images "
            f"are near copies[/] (threshold {cc['threshold']:.4f}, {cc['rule']})"
        )
        if result.get("dp") is not None:
            bad = result["dp"]["verdict"] != "consistent"
            out.print(
                dp_line(result["dp"]),
                style="bold red" if bad else "green",
                markup=False,
                soft_wrap=True,
            )
        from rcig_release.release.escape import sanitize

        pre = result.get("memorisation_precheck")
        if pre is not None:
            bad = not pre["passed"]
            out.print(
                f"{pre['summary']} (release's check, run before the shadows)"
                + (f"; release would refuse this set; remedy: {pre['remedy']}" if bad else ""),
                style="bold red" if bad else "green",
                markup=False,
                soft_wrap=True,
            )
        out.print(
            sanitize(f"report: {Path(run) / 'audit' / 'audit.json'}", "terminal"), markup=False
        )
        if private_gallery is None:
            out.print(GALLERY_HINT, markup=False, soft_wrap=True)
        else:
            out.print(
                sanitize(
                    f"private gallery: {result.get('private_gallery_images')} image pairs in "
                    f"{private_gallery} (private pixels: do not share it)",
                    "terminal",
                ),
                markup=False,
                soft_wrap=True,
            )
        check_dp(result)
