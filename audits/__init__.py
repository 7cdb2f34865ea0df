"""Membership-inference audit of a distilled release (``rcig-release audit``).

Convention everywhere: **a higher score means "more likely a member"**. Pipeline: ``signals``
(logits → statistics) → ``attacks`` (statistics + keep matrix → scores) → ``metrics`` (scores →
AUC, TPR@FPR, ε lower bound); ``copycheck`` (released images vs private records); ``shadows``
(pipeline-aware shadow distillations); ``runner.run_audit`` ties them together.
"""

from rcig_release.audits.config import ATTACKS, AuditConfig
from rcig_release.audits.runner import run_audit

__all__ = ["ATTACKS", "AuditConfig", "run_audit"]
