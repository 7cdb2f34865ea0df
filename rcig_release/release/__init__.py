"""Policy-gated release of a distilled set (docs/release.md).

- ``policy``: the policy schema and TOML loader.
- ``decision``: ``evaluate_policy(run_json, eval_json, audit, policy) -> Decision`` (pure).
- ``inputs``: reading and validating RUN (arrays, run.json, eval.json, audit/audit.json).
- ``safety``: the copy check against the private training images (never overridden).
- ``bundle``: ``release(...)``, writing the bundle atomically.
- ``verify``: ``verify_bundle(path) -> list[str]``.
- ``documents``, ``figures``, ``redact``, ``hashing``: the card, the report, redaction, digests.

Import the submodules directly; this package imports nothing heavy on its own.
"""
