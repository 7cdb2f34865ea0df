"""Membership-inference audit of a distilled release (``rcig-release audit``).

Convention everywhere: **a higher score means "more likely a member"**. Pipeline: ``signals``
(logits → statistics) → ``attacks`` (statistics + keep matrix → scores) → ``metrics`` (scores →
AUC, TPR@FPR, ε lower bound); ``copycheck`` (released images vs private records); ``shadows``
(pipeline-aware shadow distillations); ``runner.run_audit`` ties them together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rcig_release.audits.config import ATTACKS, AuditConfig

if TYPE_CHECKING:
    from rcig_release.audits.runner import run_audit

__all__ = ["ATTACKS", "AuditConfig", "run_audit"]


def __getattr__(name: str) -> Any:
    # the runner imports JAX: loaded on first use, so that the CLI's option and path checks
    # (rcig_release.audits.executors) answer before JAX is imported
    if name == "run_audit":
        from rcig_release.audits.runner import run_audit

        return run_audit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
