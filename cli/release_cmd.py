"""`rcig-release release` and `rcig-release verify`: parse, call rcig_release.release, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rcig_release.cli.main import err_console, handle_errors
from rcig_release.cli.progress import print_device

console = Console(highlight=False)


def _fmt(x) -> str:
    from rcig_release.release.documents import fmt

    return fmt(x)


def limit_text(rule) -> str:
    from rcig_release.release.documents import limit_text as text

    return text(rule)


def _rules_table(rules, title: str) -> Table:
    """Decided failures one row each (a test's value is its p-value, "p = ..."); undecidable
    rules one row per family with the sizes that would decide them (documents.family_line).
    Every cell through the terminal sanitiser (``_term``)."""
    from rcig_release.release.documents import (
        family_line,
        outcome_text,
        undecidable_families,
        value_text,
    )

    table = Table(title=Text(_term(title)), title_justify="left")
    table.add_column("rule", no_wrap=True)  # names stay whole (copied into policies and greps)
    for col in ("value", "limit", "outcome", "note"):
        table.add_column(col, overflow="fold")
    for r in rules:
        if outcome_text(r) != "undecidable":
            table.add_row(
                *(
                    Text(_term(c))
                    for c in (r.name, value_text(r), limit_text(r), outcome_text(r), r.note)
                )
            )
    for title_, family in undecidable_families(rules):
        table.add_row(
            Text(f"{len(family)} rule(s)"),
            Text(""),
            Text(""),
            Text("undecidable"),
            Text(_term(family_line(title_, family))),
        )
    return table


def _term(x) -> str:
    from rcig_release.release.escape import sanitize

    return sanitize(x, "terminal")


def _g(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _memorisation_table(safety) -> Table:
    """The flagged images of a refused release: p-values and distances (no training indices)."""
    m = safety.memorisation
    table = Table(
        title=Text(f"Images flagged by the memorisation check (level {m.level:.3g})"),
        title_justify="left",
    )
    for col in (
        "image",
        "test",
        "p nearest",
        "d nearest",
        "flags below",
        "gap",
        "lowpass",
        "blend",
        "init rank / class",
    ):
        table.add_column(col, overflow="fold")
    for im in m.images:
        if im.flagged:
            table.add_row(
                *(
                    Text(c)
                    for c in (
                        str(im.index),
                        ", ".join(im.flagged_by),
                        _g(im.p_nearest),
                        _g(im.d_nearest),
                        _g(im.d_flag_nearest),
                        _g(im.stats["gap"]),
                        _g(im.stats["lowpass"]),
                        _g(im.stats["blend"]),
                        "n/a" if im.init_rank is None else f"{im.init_rank} / {im.init_class_size}",
                    )
                )
            )
    return table


def release_command(
    run: Annotated[
        Path, typer.Argument(help="Run directory (distilled.npz, run.json, eval.json, audit/).")
    ],
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            metavar="NAME|FILE",
            help="Release policy: a shipped one by name (default, strict, dp, demo: the "
            "demonstration at reduced sizes) or the path of a policy TOML file.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to create; must not exist.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Dataset name (default: the --out directory name).")
    ] = None,
    license: Annotated[
        str | None,
        typer.Option(
            "--license", help="SPDX licence id for the dataset card (default: none stated)."
        ),
    ] = None,
    override: Annotated[
        str | None,
        typer.Option(
            "--override",
            metavar="REASON",
            help="Release even though policy rules fail; the reason is recorded in the card, report and "
            "verdict. Never bypasses the memorisation (safety) check (default: none; every rule must pass).",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Where to reload the private data for the memorisation check (default: run.json's source).",
        ),
    ] = None,
    sign: Annotated[
        Path | None,
        typer.Option(
            "--sign",
            metavar="KEY",
            help="OpenSSH private key: sign the manifest (ssh-keygen -Y sign) into manifest-sha256.txt.sig (default: unsigned).",
        ),
    ] = None,
    fingerprint_key: Annotated[
        Path | None,
        typer.Option(
            "--fingerprint-key",
            metavar="FILE",
            help="Key of the keyed data fingerprint the bundle publishes (HMAC-SHA256; keep it as "
            "private as the data, outside the bundle) (default: $XDG_CONFIG_HOME/rcig-release/"
            "fingerprint.key, i.e. ~/.config/..., created with 32 random bytes, mode 0600, if absent).",
        ),
    ] = None,
    include_private_stats: Annotated[
        bool,
        typer.Option(
            "--include-private-stats",
            help="DP runs: also publish the audit, the memorisation check's statistics and the "
            "accuracies, which the (ε, δ) guarantee does not cover (the card lists them file by "
            "file; default: withheld). Runs without DP always include them.",
        ),
    ] = False,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Re-derive RUN/distilled.npz from the recorded configuration, seed and private "
            "data and require identical bytes (same JAX version and device kind); a DP run: its "
            "checkpoint chain. Required by policies with \\[release] require_replay (strict.toml) "
            "(default: off).",
        ),
    ] = False,
) -> None:
    """Release RUN as a bundle if it passes the policy (exit 3 and nothing written otherwise)."""
    from rcig_release import pathchecks
    from rcig_release.release.policy import load_policy, resolve_policy

    # the paths, the licence and the policy first, before any data or JAX is loaded, in the
    # library's order (release() repeats each check)
    pathchecks.new_out(out)
    pathchecks.license_id(license)
    pathchecks.run_dir(run, evaluated=True, audited=True, name_only=True)
    policy_path = resolve_policy(policy)
    load_policy(policy_path)  # a malformed policy is reported now, not after the data
    pathchecks.existing_file(fingerprint_key, "--fingerprint-key")
    if replay:  # the only part of a release that computes with JAX: name the device first
        print_device(err_console)

    from rcig_release.release.bundle import ReleaseRefused, release
    from rcig_release.release.escape import sanitize

    try:
        result = release(
            run,
            policy_path,
            out,
            name=name,
            license_spdx=license,
            override=override,
            data=data,
            sign=sign,
            fingerprint_key=fingerprint_key,
            include_private_stats=include_private_stats,
            replay=replay,
        )
    except ReleaseRefused as e:
        if e.decision is not None and e.decision.failed and e.safety is None:
            err_console.print(
                _rules_table(
                    e.decision.failed, f"Failed rules of policy {e.decision.policy_name!r}"
                )
            )
        if e.safety is not None and e.safety.flagged:
            err_console.print(_memorisation_table(e.safety))
        raise
    d = result.decision
    if d.passed:
        console.print(
            Text.assemble((f"policy {d.policy_name!r} passed", "green"), f" ({len(d.rules)} rules)")
        )
    else:
        err_console.print(
            _rules_table(d.failed, f"Failed rules of policy {d.policy_name!r} (overridden)")
        )
        console.print(
            Text.assemble(
                ("released with an override", "yellow"),
                f": {sanitize(result.override, 'terminal')}",
            )
        )
    if d.demonstration:
        console.print(
            Text(
                f"policy {d.policy_name!r} is a demonstration at reduced audit sizes, not a "
                "privacy audit: the bundle says so and is not tagged privacy-audited",
                style="yellow",
            )
        )
    if result.binding is not None:
        b = result.binding
        console.print(
            Text(
                "replay: RUN/distilled.npz is identical to "
                + (
                    f"a replay of run.json's pipeline (JAX {b.jax}, {b.device})"
                    if b.method == "replay"
                    else "the run's last checkpoint (DP run: checkpoint chain)"
                )
                + f" ({len(b.compared)} arrays)"
            )
        )
    if result.private_stats == "withheld":
        console.print(
            Text(
                "DP release: the audit, memorisation statistics and accuracies stay in the run "
                "directory (not covered by the guarantee; --include-private-stats publishes them)"
            )
        )
    created = " (created now: keep it, it is the only way to check the fingerprint)"
    console.print(
        Text(
            f"data fingerprint: keyed with {sanitize(result.fingerprint_key, 'terminal')}"
            + (created if result.key_created else "")
        )
    )
    signed = " (signed)" if sign is not None else ""
    console.print(
        Text(
            f"bundle written{signed}: {sanitize(result.out, 'terminal')} ({len(result.files)} files); check it "
            "with `rcig-release verify`"
        )
    )


def verify_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory written by `release`.")],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            metavar="PUB",
            help="OpenSSH public key (or allowed-signers file) the bundle must be signed with (default: none; the signature is not checked).",
        ),
    ] = None,
    fingerprint_key: Annotated[
        Path | None,
        typer.Option(
            "--fingerprint-key",
            metavar="FILE",
            help="The custodian's fingerprint key: check that the bundle's keyed data fingerprint "
            "is that of the data given by --run or --data (default: not checked).",
        ),
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            "--run",
            metavar="RUN",
            help="With --fingerprint-key: the run directory whose run.json fingerprint the "
            "bundle should hold (default: none).",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            metavar="SPEC",
            help="With --fingerprint-key: the private data itself (as distill's --data), split "
            "with the bundle's recorded seed (default: none).",
        ),
    ] = None,
) -> None:
    """Check BUNDLE: checksums, data layout, the verdict recomputed, card and report rebuilt (exit 1 if not)."""
    if not bundle.is_dir():
        from rcig_release.errors import InputError

        raise InputError(f"bundle directory not found: {bundle.name or bundle}")
    from rcig_release.release.bundle import SIGNATURE
    from rcig_release.release.escape import sanitize
    from rcig_release.release.verify import verify_bundle

    problems = verify_bundle(bundle, key=key, fingerprint_key=fingerprint_key, run=run, data=data)
    if problems:
        for p in problems:  # Text: no markup; sanitize: every control character escaped
            err_console.print(Text(sanitize(p, "terminal"), style="red"))
        err_console.print(
            f"[bold red]bundle not intact:[/] {len(problems)} problem(s)", markup=True
        )
        raise typer.Exit(1)
    if (bundle / "report" / "audit.json").is_file():
        console.print(
            "[green]bundle intact[/]: every checksum matches, the verdict follows from the bundled "
            "audit and policy, and the card, report, images and labels agree with them"
        )
    else:
        console.print(
            "[green]bundle intact[/]: every checksum matches, ε is the accountant's, and the card, "
            "images and labels agree with the bundle; the verdict's evidence (a statistic of the "
            "private data) is withheld, so the verdict itself cannot be recomputed"
        )
    if fingerprint_key is not None:
        console.print(
            Text.assemble(
                ("keyed fingerprint valid", "green"),
                ": the bundle was made from the data given, with this key",
            )
        )
    if key is not None:
        console.print(
            Text.assemble(
                ("signature valid", "green"),
                f": the holder of the key in {sanitize(key.name, 'terminal')} released exactly "
                "these files",
            )
        )
    elif (bundle / SIGNATURE).is_file():
        console.print(
            "signature present but not checked (pass --key PUB): without it, anyone could have "
            "resealed this bundle",
            markup=False,
        )
    else:
        console.print(
            "unsigned: this shows internal consistency only; anyone can edit and reseal an "
            "unsigned bundle",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.command("release")(handle_errors(release_command))
    app.command("verify")(handle_errors(verify_command))
