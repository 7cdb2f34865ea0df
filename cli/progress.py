"""Progress display shared by the commands: a step counter that shows nothing until a total is
known, and the audit's per-stage bars (stage, pipelines done/total, elapsed, ETA)."""

from __future__ import annotations

import contextlib
import os
import time
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


class EtaColumn(TimeRemainingColumn):
    """The ETA the audit measured (``eta`` field, audits/eta.py: from step and pipeline times),
    else rich's estimate from the bar's rate."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        if eta is None or task.finished:
            return super().render(task)
        return Text(_clock(eta), style="progress.remaining")


def stage_label(stage: str) -> str:
    return AUDIT_STAGES.get(stage, f"shadow pipelines ({stage})")


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def plain_interval() -> float:
    """Seconds between plain progress lines (``RCIG_RELEASE_PROGRESS_SECONDS``, default 30)."""
    try:
        return max(float(os.environ.get("RCIG_RELEASE_PROGRESS_SECONDS", "30")), 0.0)
    except ValueError:
        return 30.0


class PlainLines:
    """Progress for logs and pipes (no terminal, so no bar): one plain line when a phase starts,
    then at most one every ``every`` seconds, and one at the end: done/total, elapsed, an ETA
    from the measured rate."""

    def __init__(
        self,
        console: Console,
        label: str,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.console, self.label, self.clock = console, label, clock
        self.every = plain_interval() if every is None else every
        self.start = self.last = clock()
        self.phase_name = ""
        self.phase_start = self.start
        self.first_done: tuple[float, int] | None = None
        self.printed: tuple[str, int, int, str] | None = None

    def _print(self, text: str) -> None:
        self.console.print(Text(f"{self.label}: {text}"), soft_wrap=True)

    def phase(self, name: str) -> None:
        if name != self.phase_name:
            self.phase_name, self.phase_start, self.first_done = name, self.clock(), None
            self.last = self.phase_start
            self._print(f"{name} ({_clock(self.phase_start - self.start)} elapsed)")

    def step(self, done: int, total: int, extra: str = "", eta: float | None = None) -> None:
        """``eta``: seconds left as the caller measured them (the audit's, audits/eta.py);
        None: from the rate of ``done`` since the phase's first line."""
        if self.printed == (self.phase_name, done, total, extra):
            return  # the same line again (a stage completed twice)
        now = self.clock()
        first = self.first_done is None
        if self.first_done is None:
            self.first_done = (now, done)
        if not first and now - self.last < self.every and done < total:
            return
        self.last = now
        self.printed = (self.phase_name, done, total, extra)
        t0, d0 = self.first_done
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else None
        if eta is not None:
            eta_text = _clock(eta)
        else:
            eta_text = _clock((total - done) / rate) if rate else "-:--:--"
        pct = f" ({100 * done / total:.0f} %)" if total else ""
        tail = f", {extra}" if extra else ""
        self._print(
            f"{self.phase_name} {done}/{total}{pct}, {_clock(now - self.start)} elapsed, "
            f"ETA {eta_text}{tail}"
        )


@contextlib.contextmanager
def stage_progress(console: Console, enabled: bool = True) -> Iterator[StageCallback | None]:
    """Yields a ``progress(stage, done, total, eta=None)`` callback drawing one bar per stage
    (plain lines, ``PlainLines``, when the console is not a terminal), or ``None`` when
    disabled. A stage's bar is completed when the next stage starts. ``"STAGE: detail"`` is
    the stage ``STAGE`` with ``detail`` shown; ``eta`` (seconds, the audit's measured estimate)
    replaces the estimate from the bar's rate."""
    if not enabled:
        yield None
        return
    if not console.is_terminal:
        lines = PlainLines(console, "audit")
        now: list[tuple[str, int]] = []  # the current stage and its total

        def plain(stage: str, done: int, total: int, eta: float | None = None) -> None:
            total = max(int(total), 1)
            # "release: shadow 3: distill step 40/100" or "release: 2 running, 5 queued": the
            # line of the stage "release", with the detail at its end
            stage, _, detail = stage.partition(": ")
            if now and (stage == "done" or stage != now[0][0]):
                lines.step(now[0][1], now[0][1])  # a stage is complete when the next starts
                now.clear()
            if stage == "done":
                return
            now[:] = [(stage, total)]
            lines.phase(stage_label(stage))
            lines.step(int(done), total, detail, eta)

        yield plain
        return
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        CountColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        EtaColumn(),
    )
    with Progress(*columns, console=console, refresh_per_second=2) as bar:
        tasks: dict[str, tuple[TaskID, int]] = {}
        current: list[str] = []

        def finish_current() -> None:
            if current:
                task_id, total = tasks[current[-1]]
                bar.update(task_id, completed=total)

        def progress(stage: str, done: int, total: int, eta: float | None = None) -> None:
            total = max(int(total), 1)
            if stage == "done":
                finish_current()
                return
            # "release: 2 running, 5 queued" (a Ray executor) updates the bar of "release"
            stage, _, detail = stage.partition(": ")
            label = stage_label(stage) + (f": {detail}" if detail else "")
            if stage not in tasks:
                finish_current()
                tasks[stage] = (bar.add_task(label, total=total), total)
                current.append(stage)
            tasks[stage] = (tasks[stage][0], total)
            bar.update(tasks[stage][0], completed=done, total=total, description=label, eta=eta)

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
