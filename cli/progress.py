"""Progress display shared by the commands: a step counter that shows nothing until a total is
known, and the audit's per-stage bars (stage, pipelines done/total, elapsed, ETA)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

StageCallback = Callable[[str, int, int], None]

# how the audit library's stage names read on the bar; any other stage is a shadow-pipeline kind
AUDIT_STAGES = {"targets": "target networks", "attacks": "attacks"}


class CountColumn(ProgressColumn):
    """``done/total``, or nothing while the total is unknown (no ``0/?``)."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)}", style="progress.download")


def stage_label(stage: str) -> str:
    return AUDIT_STAGES.get(stage, f"shadow pipelines ({stage})")


@contextlib.contextmanager
def stage_progress(console: Console, enabled: bool = True) -> Iterator[StageCallback | None]:
    """Yields a ``progress(stage, done, total)`` callback drawing one bar per stage, or ``None``
    when disabled. A stage's bar is completed when the next stage starts."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        CountColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, refresh_per_second=2) as bar:
        tasks: dict[str, tuple[TaskID, int]] = {}
        current: list[str] = []

        def finish_current() -> None:
            if current:
                task_id, total = tasks[current[-1]]
                bar.update(task_id, completed=total)

        def progress(stage: str, done: int, total: int) -> None:
            total = max(int(total), 1)
            if stage == "done":
                finish_current()
                return
            if stage not in tasks:
                finish_current()
                tasks[stage] = (bar.add_task(stage_label(stage), total=total), total)
                current.append(stage)
            tasks[stage] = (tasks[stage][0], total)
            bar.update(tasks[stage][0], completed=done, total=total)

        yield progress


def device_text() -> str:
    """One line naming where JAX computes: backend, device count and kind (imports JAX)."""
    import jax

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return (
        f"device: JAX {jax.default_backend()} backend, {len(devices)} device"
        f"{'s' if len(devices) != 1 else ''} ({', '.join(kinds)})"
    )


def print_device(console: Console) -> None:
    """The first line of a command that loads JAX (after its path checks): the device."""
    console.print(Text(device_text()), style="dim")
