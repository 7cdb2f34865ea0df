"""The audit's progress inside a stage of shadow pipelines: what is running and an ETA from
measured times (docs/audit.md, "Progress").

The audit reports through ``progress(stage, done, total)`` (pipelines done of the stage's
total); a callback that also takes the keyword ``eta`` receives the stage's estimated seconds
left (None while nothing has been measured) and, with the local executor, the step-level
events (``"release: shadow 3: distill step 40/100"``). ``forward`` adapts either kind.

* ``PipelineClock`` (pipelines one after the other, in this process): measures the time per
  distillation step (from the distillation loop's step callback, between the steps at which
  the loop waits for the device: its first and its logged ones) and each finished pipeline's
  wall time; ETA = time per step × the distillation steps left in this and every later
  pipeline + the per-pipeline overhead (setup, compile, training the networks, their logits)
  for each pipeline left. The overhead is the measured wall time less its steps (the mean over
  the finished pipelines after the first, whose compiles the later ones skip); before any
  pipeline finished, the current one's time to its first step.
* ``SlotClock`` (Ray tasks, ``slots`` at a time): each finished pipeline's wall time (from the
  time a slot took it, first in first out) and ETA = the mean wall time × the pipelines left,
  less the running ones' elapsed time, shared over the slots.

Only clocks are read: nothing here changes what a pipeline computes.
"""

from __future__ import annotations

import collections
import inspect
import math
import time
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]


def accepts_eta(callback: Callable[..., Any]) -> bool:
    """Whether ``callback(stage, done, total, eta=...)`` binds (else it takes three arguments)."""
    try:
        inspect.signature(callback).bind("stage", 0, 1, eta=None)
    except (TypeError, ValueError):
        return False
    return True


class Forward:
    """A progress callback called as ``f(stage, done, total, eta)``: ``eta`` passed as a
    keyword where the callback takes it, dropped where it takes only ``(stage, done, total)``.
    ``detailed``: whether it takes ``eta``; only such callbacks get the step-level events (a
    three-argument callback sees the events it saw before they existed)."""

    def __init__(self, callback: Callable[..., Any]):
        self.callback, self.detailed = callback, accepts_eta(callback)

    def __call__(self, stage: str, done: int, total: int, eta: float | None = None) -> None:
        if self.detailed:
            self.callback(stage, done, total, eta=eta)
        else:
            self.callback(stage, done, total)


def forward(callback: Callable[..., Any] | None) -> Forward | None:
    """``callback`` as a ``Forward`` (itself if it is one; None for None)."""
    if callback is None or isinstance(callback, Forward):
        return callback
    return Forward(callback)


class PipelineClock:
    """ETA of ``n`` pipelines run one after the other (``start``, ``step``…, ``end`` each)."""

    def __init__(self, n: int, clock: Clock = time.monotonic):
        self.clock = clock
        self.left = n  # pipelines not finished, the current one included
        self.walls: list[tuple[float, int]] = []  # finished: (wall seconds, distillation steps)
        self.dt_sum, self.dt_n = 0.0, 0  # measured step intervals
        self.t_start: float | None = None
        self.t_first: float | None = None  # the current pipeline's first step event
        self.t_last: float | None = None  # the current pipeline's last synced step event
        self.steps, self.step_done, self.sync_step = 0, 0, 0
        self.t_group: float | None = None  # the current group's start
        self.waiting = 0  # distilled pipelines of the current group, waiting for its networks

    def start(self, steps: int | None = None) -> None:
        """A pipeline with ``steps`` distillation steps starts (None: as many as the last one,
        until its first step says)."""
        self.t_start, self.t_first, self.t_last = self.clock(), None, None
        if self.t_group is None:
            self.t_group = self.t_start
        self.steps, self.step_done = self.steps if steps is None else int(steps), 0
        self.sync_step = 0

    def step(self, t: int, steps: int, synced: bool = True) -> None:
        """Distillation step ``t`` of ``steps`` of the current pipeline is done; ``synced``: the
        device had finished it (the loop dispatches steps asynchronously and waits for the
        device at its first step and at each logged one: only the time between such steps is
        the device's)."""
        now = self.clock()
        if synced:
            if self.t_last is not None and t > self.sync_step:
                self.dt_sum += now - self.t_last
                self.dt_n += t - self.sync_step
            self.t_last, self.sync_step = now, int(t)
        if self.t_first is None:
            self.t_first = now
        self.step_done, self.steps = int(t), int(steps)

    def distilled(self) -> None:
        """The current pipeline's distillation is done and it waits for its group's networks
        (pipelines in groups: shadows.py ``shadow_group``)."""
        if self.t_start is not None:
            self.waiting += 1
            self.t_start = None

    def end(self) -> None:
        """The current pipeline (with the ones of its group that wait) is finished (files
        written); the group's wall time is shared by its pipelines."""
        n = self.waiting + (self.t_start is not None)
        if n and self.t_group is not None:
            self.walls += [((self.clock() - self.t_group) / n, self.steps)] * n
        self.left = max(self.left - n, 0)
        self.t_start = self.t_group = None
        self.waiting = 0

    def step_seconds(self) -> float | None:
        return self.dt_sum / self.dt_n if self.dt_n else None

    def overhead(self, step_s: float) -> float | None:
        """A pipeline's seconds outside its distillation steps."""
        walls = self.walls[1:] or self.walls  # the first one compiled what the others reuse
        if walls:
            return sum(max(w - s * step_s, 0.0) for w, s in walls) / len(walls)
        if self.t_first is not None and self.t_start is not None:
            return self.t_first - self.t_start
        return None

    def eta(self) -> float | None:
        """Seconds until every pipeline is finished, or None before anything is measured."""
        if self.left == 0:
            return 0.0
        step_s = self.step_seconds()
        if step_s is None:  # no step measured (yet, or pipelines without steps): whole pipelines
            if not self.walls:
                return None
            step_s = 0.0
        over = self.overhead(step_s)
        if over is None:
            return None
        now = self.clock()
        after = self.left - self.waiting - (self.t_start is not None)
        current = self.waiting * over  # their share of the group's networks (an over-estimate)
        if self.t_start is not None:
            spent = (now - self.t_start) - self.step_done * step_s  # overhead spent so far
            current += (self.steps - self.step_done) * step_s + max(over - spent, 0.0)
        return current + after * (self.steps * step_s + over)


class SlotClock:
    """ETA of ``n`` tasks run ``slots`` at a time, from their measured wall times (tasks are
    taken first in first out: a slot freed by a finished task takes the next queued one)."""

    def __init__(self, n: int, slots: int, clock: Clock = time.monotonic):
        self.clock, self.slots, self.queued = clock, max(int(slots), 1), int(n)
        now = clock()
        first = min(self.slots, self.queued)
        self.running: collections.deque[float] = collections.deque([now] * first)
        self.queued -= first
        self.walls: list[float] = []

    def finished(self) -> None:
        now = self.clock()
        if self.running:
            self.walls.append(now - self.running.popleft())
        if self.queued:
            self.running.append(now)
            self.queued -= 1

    def eta(self) -> float | None:
        if not self.running and not self.queued:
            return 0.0
        if not self.walls:
            return None
        wall = sum(self.walls) / len(self.walls)
        now = self.clock()
        work = sum(max(wall - (now - s), 0.0) for s in self.running) + self.queued * wall
        busy = min(self.slots, len(self.running) + self.queued)
        return work / busy if math.isfinite(work) else None
