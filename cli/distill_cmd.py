"""``rcig-release distill`` and ``rcig-release evaluate``: parse, call the library, render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from rcig_release.cli.options import CheckAfterDistill, CheckAfterEvaluate, RunData, RunDir
from rcig_release.cli.progress import CountColumn, PlainLines, print_device

console = Console(stderr=True, highlight=False)


def _default_preset() -> str:
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "paper"


def distill(
    data: Annotated[
        str,
        typer.Option(
            help="digits (built in), mnist, fashion-mnist, cifar10, a .npz file or an image folder"
        ),
    ] = "digits",
    out: Annotated[
        Path | None,
        typer.Option(help=r"run directory, outside the data \[default: runs/<data>-ipc<ipc>]"),
    ] = None,
    ipc: Annotated[int | None, typer.Option(help=r"images per class \[default: 1]")] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help=r"outer iterations (0: export the initialisation) \[default: the preset's: paper "
            "10000; cpu 100 below 10,000 training images, else 1300 at 1 ipc and fewer above]"
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help=r"centroids (each image the mean of a k-means cluster of its class: the class "
            "mean at 1 ipc), mean, noise, real (the paper's: one training record per image, "
            "refused at release), or dp-mean (the class means of a DP feature-means release; "
            r"DP defaults: dp-mean for --dp-mechanism features, else noise) \[default: centroids]"
        ),
    ] = None,
    init_min_records: Annotated[
        int | None,
        typer.Option(
            help=r"centroids/mean: records averaged into each image, at least \[default: 10]"
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help=r"random seed \[default: 0]")] = None,
    preset: Annotated[
        str | None, typer.Option(help=r"cpu or paper \[default: cpu without a GPU, else paper]")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help=r"TOML file of DistillConfig values \[default: none]")
    ] = None,
    width: Annotated[
        int | None, typer.Option(help=r"ConvNet width \[default: the preset's: cpu 32, paper 128]")
    ] = None,
    real_batch: Annotated[
        int | None,
        typer.Option(
            help=r"real images per outer step \[default: paper 1024; cpu 256 below 10,000 training "
            "images, else 128]"
        ),
    ] = None,
    zca: Annotated[
        bool | None,
        typer.Option(
            "--zca/--no-zca", help=r"ZCA whitening \[default: on for colour data, off for grey]"
        ),
    ] = None,
    dp_epsilon: Annotated[
        float | None,
        typer.Option(
            help=r"differential privacy: target ε of the whole run (DP-RCIG, docs/dp.md; needs "
            r"--init noise or dp-mean, the DP defaults, and no ZCA) \[default: off]"
        ),
    ] = None,
    dp_delta: Annotated[
        float | None, typer.Option(help=r"DP: δ, warned about when ≥ 1/N \[default: 1e-6]")
    ] = None,
    dp_clip: Annotated[
        float | None, typer.Option(help=r"DP: per-example gradient clip norm C \[default: 1.0]")
    ] = None,
    dp_sampling_rate: Annotated[
        float | None,
        typer.Option(help=r"DP: Poisson sampling rate q \[default: real batch / training images]"),
    ] = None,
    check: CheckAfterDistill = True,
    dp_mechanism: Annotated[
        str | None,
        typer.Option(
            help=r"DP: rcig (per-step clipped gradients) or features (one release of per-class "
            r"random-ConvNet feature means, then free optimisation; docs/dp.md) \[default: rcig]"
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="continue a killed or interrupted run in --out")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="start over in a non-empty --out (it is kept as <out>.bak<k>)")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    coordinator: Annotated[
        str | None,
        typer.Option(
            help="several processes (hosts): HOST:PORT of process 0, the same in every process; "
            r"every process runs the same command and only process 0 writes --out \[default: "
            "one process, or JAX_COORDINATOR_ADDRESS]"
        ),
    ] = None,
    num_processes: Annotated[
        int | None, typer.Option(help=r"several processes: how many \[default: 1]")
    ] = None,
    process_id: Annotated[
        int | None, typer.Option(help=r"several processes: this one's index, 0..N-1 \[default: 0]")
    ] = None,
) -> None:
    """Distil the training split of DATA into a few synthetic images per class with RCIG."""
    from rcig_release import pathchecks
    from rcig_release.errors import InputError

    if resume and force:
        raise InputError("--resume and --force exclude each other")
    if resume and out is None:
        raise InputError("--resume needs --out RUN")
    # paths first, before the data or JAX load (--help and these answer in well under a second)
    if not process_id:  # a process > 0 of a multi-process run writes nothing: its --out and
        # --resume state come from process 0 once the processes have joined
        pathchecks.distill_out(out, resume=resume, force=force, data=data)
    pathchecks.existing_file(config, "--config")
    if not resume:
        pathchecks.data_spec(data)

    from rcig_release import parallel
    from rcig_release.cli.check_cmd import run_precheck
    from rcig_release.config import (
        DEFAULT_INIT,
        RECORD_INIT_MODES,
        DistillConfig,
        load_toml,
        make_distill_config,
        to_dict,
    )
    from rcig_release.pipeline import default_out, distill_run, resume_config
    from rcig_release.release.escape import sanitize

    # before anything else touches JAX (the preset's default asks for the backend)
    parallel.initialize(coordinator, num_processes, process_id)
    if resume:
        assert out is not None
        run_out = out
        cfg, data = parallel.on_primary(  # run.json is process 0's (no shared filesystem needed)
            lambda: resume_config(run_out),
            encode=lambda cd: [to_dict(cd[0]), cd[1]],
            decode=lambda v: (DistillConfig(**v[0]), v[1]),
        )
    else:
        file_values = load_toml(config) if config else None
        cfg = make_distill_config(
            preset or _default_preset(),
            file_values,
            ipc=ipc,
            steps=steps,
            init=init,
            init_min_records=init_min_records,
            seed=seed,
            width=width,
            real_batch=real_batch,
            zca=zca,
            dp_epsilon=dp_epsilon,
            dp_delta=dp_delta,
            dp_clip=dp_clip,
            dp_sampling_rate=dp_sampling_rate,
            dp_mechanism=dp_mechanism,
        )
        out = out or default_out(data, cfg.ipc)
    print_device(console)  # the configuration is valid: the run starts
    if cfg.init in RECORD_INIT_MODES:
        console.print(
            Text(
                f"--init {cfg.init}: every image starts from one training record; release refuses "
                "such a set (memorisation check). For a releasable set leave --init at its default "
                f"({DEFAULT_INIT}).",
                style="yellow",
            )
        )

    if quiet:
        run = distill_run(out, data, cfg, resume=resume, force=force)
    elif not console.is_terminal:  # a log or a pipe: plain lines, no bar
        lines = PlainLines(console, "distill")

        def plain_progress(step: int, total: int, last: dict) -> None:
            lines.phase("distill")
            loss = f"outer loss {last['outer_loss']:.4f}" if "outer_loss" in last else ""
            lines.step(step, total, loss)

        run = distill_run(
            out,
            data,
            cfg,
            resume=resume,
            force=force,
            progress=plain_progress,
            status=lambda m: console.print(m, markup=False),
            phase=lines.phase,
        )
    else:
        # the first column names the phase (loading data, learning-rate search, compiling the
        # step) until the steps start; the count stays empty while the total is unknown
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            CountColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[loss]}", markup=False),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("starting", total=None, loss="")

            def phase(name: str) -> None:
                bar.update(task, description=name)

            def progress(step: int, total: int, last: dict) -> None:
                loss = f"outer loss {last['outer_loss']:.4f}" if "outer_loss" in last else ""
                bar.update(task, description="distill", completed=step, total=total, loss=loss)

            run = distill_run(
                out,
                data,
                cfg,
                resume=resume,
                force=force,
                progress=progress,
                status=lambda m: console.print(sanitize(m, "terminal"), markup=False),
                phase=phase,
            )
            bar.update(
                task,
                description="distill",
                completed=run["config"]["steps"],
                total=max(run["config"]["steps"], 1),
            )
    t = run["timings"]
    console.print(
        Text.assemble(
            ("done", "green"),
            f": {sanitize(out, 'terminal')} ({cfg.ipc * len(run['data']['classes'])} images, "
            f"{run['config']['steps']} steps, distillation {t['distill_seconds']:.1f} s)",
        )
    )
    if check:
        run_precheck(out)


def evaluate(
    run: RunDir,
    models: Annotated[int, typer.Option(help="networks trained (vmapped)")] = 5,
    arch: Annotated[str, typer.Option(help="convnet, mlp, resnet18, vgg11 or alexnet")] = "convnet",
    augment: Annotated[bool, typer.Option(help="train with the paper's augmentation")] = False,
    width: Annotated[int | None, typer.Option(help=r"network width \[default: the run's]")] = None,
    steps: Annotated[
        int | None, typer.Option(help=r"training steps \[default: 1000 for ≤10 images, else 2000]")
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    data: RunData = None,
    as_json: Annotated[
        bool, typer.Option("--json", help=r"print eval.json to stdout \[default: off]")
    ] = False,
    check: CheckAfterEvaluate = True,
) -> None:
    """Train fresh networks on the distilled set; report test accuracy; write RUN/eval.json."""
    from rcig_release import pathchecks
    from rcig_release.config import EvalConfig
    from rcig_release.errors import InputError

    pathchecks.run_dir(run)
    pathchecks.data_spec(data)
    print_device(console)
    from rcig_release.evaluate import evaluate_run
    from rcig_release.models import ARCHS as ARCHS_EVAL

    if arch not in ARCHS_EVAL:
        raise InputError(f"--arch must be one of {', '.join(ARCHS_EVAL)} (got {arch!r})")
    if models < 1:
        raise InputError(f"--models must be at least 1 (got {models})")
    cfg = EvalConfig(arch=arch, models=models, augment=augment, width=width, steps=steps, seed=seed)
    what = f"training {models} {arch} networks"
    if not console.is_terminal:  # a log or a pipe: plain lines
        lines = PlainLines(console, "evaluate")
        lines.phase(what)
        result = evaluate_run(
            run, cfg, data=data, progress=lambda done, total, loss: lines.step(done, total)
        )
    else:
        columns = (
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            CountColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(f"{what} (loading, compiling)", total=None)

            def step(done: int, total: int, loss: float) -> None:
                bar.update(task, description=what, completed=done, total=total)

            result = evaluate_run(run, cfg, data=data, progress=step)
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        _print_eval(run, arch, result)
    if check:
        from rcig_release.cli.check_cmd import run_precheck

        run_precheck(run, data)


def _print_eval(run: Path, arch: str, result: dict) -> None:
    table = Table(title=Text(f"Test accuracy of networks trained on {run}"))
    for col in ("arch", "width", "models", "steps", "augment", "accuracy"):
        table.add_column(col, justify="right")
    table.add_row(
        arch,
        str(result["width"]),
        str(result["models"]),
        str(result["steps"]),
        str(result["augment"]),
        f"{100 * result['accuracy_mean']:.2f} ± {100 * result['accuracy_std']:.2f} %",
    )
    Console().print(table)


def register(app: typer.Typer) -> None:
    from rcig_release.cli.main import handle_errors  # here: main imports this module

    app.command()(handle_errors(distill))
    app.command()(handle_errors(evaluate))
