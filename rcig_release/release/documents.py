"""The human-readable bundle files: the Hugging Face dataset card and the offline HTML report.

Both are built from the same ``Summary`` (headline audit numbers, verdict, utility) so they never
disagree. Every string that came from an input or the command line is escaped for where it goes:
``escape.md`` in the card's Markdown; the report is rendered by Jinja2 from
``templates/report.html.j2`` with autoescape on (the context is plain data, nothing is escaped in
advance and the template has no ``|safe``); the card's YAML front matter is emitted by PyYAML
(never by string formatting).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2
import yaml

from rcig_release.release import coverage
from rcig_release.release.auditview import baseline, copy_rows, shadow_count, target_accuracy
from rcig_release.release.decision import Decision, Rule
from rcig_release.release.escape import md
from rcig_release.release.safety import SafetyResult

# SPDX ids whose lower-case form is also a Hugging Face licence id.
_HF_LICENSES = {
    "apache-2.0",
    "mit",
    "cc0-1.0",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0",
    "cc-by-nd-4.0",
    "cc-by-nc-nd-4.0",
    "bsd-2-clause",
    "bsd-3-clause",
    "odbl",
    "odc-by",
    "pddl",
    "gpl-3.0",
    "lgpl-3.0",
    "mpl-2.0",
    "cdla-permissive-2.0",
    "cdla-sharing-1.0",
    "unlicense",
}
ATTACK_ORDER = ("loss", "shadow", "lira_online", "lira_offline", "rmia", "nearest")


@dataclasses.dataclass(frozen=True)
class Summary:
    name: str
    license_spdx: str | None
    n_images: int
    classes: tuple[str, ...]
    image_shape: tuple[int, ...]
    per_class: tuple[int, ...]
    run_json: Mapping
    eval_json: Mapping
    audit: Mapping  # {} in a DP bundle that withholds its private statistics
    decision: Decision | None  # None when withheld: verify cannot recompute it (no audit)
    safety: SafetyResult | None  # None when withheld (only that it passed is published)
    override: str | None
    content_sha256: str
    class_dirs: tuple[str, ...] = ()  # data/images/<dir> of each class (derived.class_dir_names)
    private_stats: str = coverage.INCLUDED  # coverage.WITHHELD: a DP bundle without them
    # what the (ε, δ) statement covers, file by file (coverage.rows; DP bundles only)
    coverage: tuple[tuple[str, str, str, str], ...] = ()
    outcome: Outcome | None = None  # the published decision when the statistics are withheld
    # the released soft labels, one row per image (soft_label_rows): the card describes them
    image_labels: tuple[tuple[float, ...], ...] = ()

    @property
    def verdict(self) -> str:
        if self.decision is None:
            assert self.outcome is not None
            return self.outcome.verdict
        if self.decision.passed:
            return "pass"
        return "overridden" if self.override else "fail"

    @property
    def demonstration(self) -> bool:
        """Released under a demonstration policy (reduced sizes; not a privacy audit)."""
        if self.decision is not None:
            return self.decision.demonstration
        return self.outcome is not None and self.outcome.demonstration

    @property
    def withheld(self) -> bool:
        return self.private_stats == coverage.WITHHELD


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a DP bundle that withholds its private statistics says of the decision: the verdict,
    the policy, and (overridden) the names of the failed rules; no value, no p-value."""

    verdict: str  # "pass" or "overridden"
    policy_name: str
    policy_sha256: str
    failed: tuple[str, ...]
    demonstration: bool = False  # verdict.json's demonstration statement is present


def hf_license(spdx: str | None) -> dict[str, str]:
    if spdx is None:
        return {"license": "other", "license_name": "unspecified"}
    if spdx.lower() in _HF_LICENSES:
        return {"license": spdx.lower()}
    return {"license": "other", "license_name": spdx}


def size_category(n: int) -> str:
    for hi, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < hi:
            return label
    return "1M<n<10M"


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "n/a"
        if x != 0 and abs(x) < 0.5 * 10**-digits:  # would print as 0.000: a learning rate, say
            return f"{x:.1e}"
        return f"{x:.{digits}f}"
    if isinstance(x, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in x)
    return str(x)


def soft_label_rows(labels: Any) -> tuple[tuple[float, ...], ...]:
    """The soft labels as the card reads them (an [N, C] array's rows as floats)."""
    return tuple(tuple(float(v) for v in row) for row in labels.tolist())


def fmt_p(x: Any) -> str:
    """A p-value: 3 decimals, or 2 significant digits below 0.001."""
    v = x if isinstance(x, (int, float)) and not isinstance(x, bool) else None
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.1e}" if 0 < v < 1e-3 else f"{v:.3f}"


def fmt_pct(x: Any) -> str:
    """A probability as a percentage (0.99 -> "99 %")."""
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:g} %"


def value_text(r: Rule) -> str:
    """A rule's measured value, labelled: a test rule's value is its p-value ("p = ...")."""
    if r.comparison == "p >":
        return f"p = {fmt_p(r.value)}"
    return fmt(r.value)


def outcome_text(r: Rule) -> str:
    """pass; "leak detected" (a significant departure from chance); "undecidable" (the sizes
    could not have detected the policy's effect: fails closed); FAIL (any other failure)."""
    if r.passed:
        return "pass"
    if r.note.startswith("leak detected"):
        return "LEAK DETECTED"
    if r.note.startswith("undecidable"):
        return "undecidable"
    return "FAIL"


_GAME_RULE = re.compile(r"^game\.(?P<attack>[^\[]+)\[(?P<group>[^\]]+)\]\.(?P<test>.+)$")
_TEST_WORDS = {
    "auc": "AUC",
    "tpr_at_fpr_0.01": "TPR at 1 % FPR",
    "tpr_at_fpr_0.001": "TPR at 0.1 % FPR",
    "epsilon_lower_bound": "ε lower bound",
}


def _group_words(group: str) -> str:
    if group == "all":
        return "all records"
    if group == "init":
        return "the init records"
    return f"group {group}"


def undecidable_families(rules: Sequence[Rule]) -> list[tuple[str, list[Rule]]]:
    """The undecidable game rules grouped by (group, test): one family per line of the documents,
    in the order of their first rule."""
    families: dict[tuple[str, str], list[Rule]] = {}
    for r in rules:
        m = _GAME_RULE.match(r.name)
        if r.passed or not r.note.startswith("undecidable") or m is None:
            continue
        families.setdefault((m["group"], m["test"]), []).append(r)
    return [
        (f"{_TEST_WORDS.get(test, test)} over {_group_words(group)}", rs)
        for (group, test), rs in families.items()
    ]


def family_line(title: str, rules: Sequence[Rule]) -> str:
    """One line for a family of undecidable rules: the attacks, the power reached and the sizes
    that would decide them (from the rules' notes, which decision.py writes)."""
    attacks = [m["attack"] for r in rules if (m := _GAME_RULE.match(r.name))]
    powers = [float(x) for r in rules for x in re.findall(r"with power ([0-9.]+)", r.note)]
    need = next((m[1] for r in rules if (m := re.search(r"needs ([0-9.]+)", r.note))), None)
    shadows = [int(x) for r in rules for x in re.findall(r"--shadows (\d+) would decide", r.note)]
    caps = [float(x) for r in rules for x in re.findall(r"can show is ([0-9.]+)", r.note)]
    parts = [f"{title} ({len(rules)} rule{'s' if len(rules) != 1 else ''}: {', '.join(attacks)})"]
    if powers:
        lo, hi = min(powers), max(powers)
        parts.append(
            f"power {lo:.3f}" + ("" if hi == lo else f" to {hi:.3f}") + f", needs {need or 'n/a'}"
        )
    if caps:
        parts.append(f"the largest ε lower bound these sizes can show is {max(caps):.3f}")
    if shadows:
        parts.append(f"--shadows {max(shadows)} would decide {'them' if len(rules) > 1 else 'it'}")
    elif any("no --shadows up to" in r.note for r in rules):
        parts.append("no number of shadows would at these records (raise --records)")
    else:
        hint = next((m[1] for r in rules if (m := re.search(r"raise ([^;(]+)", r.note))), None)
        if hint:
            parts.append(f"raise {hint.strip()}")
    return "; ".join(parts)


def _tpr(m: Mapping | None, fpr: str) -> Any:
    if not isinstance(m, Mapping):
        return None
    return (m.get("tpr_at_fpr") or {}).get(fpr)


def _game_all(audit: Mapping | None, attack: str) -> Mapping:
    g = (audit or {}).get("game") if isinstance(audit, Mapping) else None
    a = ((g or {}).get("attacks") or {}).get(attack) if isinstance(g, Mapping) else None
    m = ((a or {}).get("groups") or {}).get("all") if isinstance(a, Mapping) else None
    return m if isinstance(m, Mapping) else {}


def headline_rows(audit: Mapping) -> list[list[str]]:
    """One row per attack: this release's AUC and calibrated TPR@1%, then the game's pooled AUC,
    its p-value of "at chance" and ε lower bound (largest showable), then the baselines' games."""
    attacks = audit.get("attacks") or {}
    game = (
        (audit.get("game") or {}).get("attacks") or {}
        if isinstance(audit.get("game"), Mapping)
        else {}
    )
    names = [a for a in ATTACK_ORDER if a in attacks or a in game]
    names += sorted((set(attacks) | set(game)) - set(ATTACK_ORDER))
    naive, real = baseline(audit, "naive"), baseline(audit, "real")
    rows = []
    for a in names:
        m, g = attacks.get(a) or {}, _game_all(audit, a)
        eps = g.get("epsilon_lower_bound")
        rows.append(
            [
                a,
                fmt(m.get("auc")),
                fmt(_tpr(m, "0.01")),
                fmt(g.get("auc")),
                fmt((g.get("p_value") or {}).get("auc")),
                "n/a" if eps is None else f"{fmt(eps, 2)} (of {fmt(g.get('max_epsilon'), 2)})",
                fmt(_game_all(naive, a).get("auc")),
                fmt(_game_all(real, a).get("auc")),
            ]
        )
    return rows


HEADLINE_HEADER = [
    "attack",
    "this release AUC",
    "this release TPR@1%FPR",
    "game AUC",
    "game p (AUC at chance)",
    "game ε lower bound",
    "naive game AUC",
    "real-model game AUC",
]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; every cell is escaped (``escape.md``), so a cell can neither end the row
    nor carry HTML, links or emphasis."""
    lines = ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def limit_text(r: Rule) -> str:
    if r.comparison == "present":
        return "must have run"
    if r.comparison == "p >":
        return f"p > {fmt_p(r.limit)}"
    return f"{r.comparison} {fmt(r.limit)}"


def _rule_row(r: Rule) -> list[str]:
    return [r.name, value_text(r), limit_text(r), outcome_text(r), r.note]


def _config(s: Summary) -> Mapping:
    c = s.run_json.get("config")
    return c if isinstance(c, Mapping) else {}


def _init_mode(s: Summary) -> str:
    init = s.run_json.get("init")
    if isinstance(init, Mapping) and init.get("mode"):
        return str(init["mode"])
    return str(_config(s).get("init", "unknown"))


def _init_text(s: Summary) -> str:
    """What the initial images were, for the card (the aggregate modes state their k)."""
    mode, k = _init_mode(s), md(fmt(_config(s).get("init_min_records")))
    if mode == "real":
        return "random real private training images, the RCIG default"
    if mode == "mean":
        return f"the mean of all private training images of each class (at least {k} each)"
    if mode == "centroids":
        return (
            "the means of k-means clusters of each class's private training images, at least "
            f"{k} images per cluster (the class mean at 1 image per class)"
        )
    return "random noise"


def _utility_rows(s: Summary) -> list[list[str]]:
    e = s.eval_json
    acc = e.get("accuracy_mean")
    std = e.get("accuracy_std")
    rows = [
        [
            "this release (evaluate)",
            f"{fmt(acc)} ± {fmt(std)}",
            fmt(e.get("arch")),
            fmt(e.get("models")),
        ]
    ]
    own, source = target_accuracy(s.audit)
    if own is not None:
        rows.append(["this release (audit target networks)", fmt(own), "", ""])
    for kind, label in (
        ("naive", "naive release (same number of random real images)"),
        ("real", "network trained on the full private training split"),
    ):
        b_acc, b_src = target_accuracy(baseline(s.audit, kind))
        if b_acc is not None:
            rows.append(
                [
                    label + (" (audit target networks)" if b_src == "targets" else ""),
                    fmt(b_acc),
                    "",
                    "",
                ]
            )
    return rows


def card_metadata(s: Summary) -> dict[str, Any]:
    """The card's YAML front matter as data: Hugging Face card fields, ``dataset_info`` whose
    ``label`` ClassLabel lists the class names in the release's order (so label ids equal the npz
    ids), and a ``default`` config over data/metadata.jsonl and the PNGs."""
    features = [
        {"name": "image", "dtype": "image"},
        {"name": "index", "dtype": "int64"},
        {
            "name": "label",
            "dtype": {"class_label": {"names": {str(i): c for i, c in enumerate(s.classes)}}},
        },
        {"name": "soft_label", "sequence": "float32"},
    ]
    meta: dict[str, Any] = dict(hf_license(s.license_spdx))
    meta.update(
        {
            "pretty_name": s.name,
            "task_categories": ["image-classification"],
            "task_ids": ["multi-class-image-classification"],
            "size_categories": [size_category(s.n_images)],
            "annotations_creators": ["machine-generated"],
            # a demonstration policy's audit is no privacy audit: no `privacy-audited` tag
            "tags": ["synthetic", "dataset-distillation", "rcig"]
            + (["demonstration"] if s.demonstration else ["privacy-audited"])
            + (["differential-privacy"] if run_dp(s) is not None else []),
            "dataset_info": {
                "features": features,
                "splits": [{"name": "train", "num_examples": s.n_images}],
            },
            # the imagefolder builder takes its features from the config (dataset_info alone is
            # replaced by what it infers from metadata.jsonl: an int label without names)
            "configs": [
                {
                    "config_name": "default",
                    "data_files": [
                        {"split": "train", "path": ["data/metadata.jsonl", "data/images/*/*.png"]}
                    ],
                    "features": features,
                }
            ],
        }
    )
    return meta


class _Quoted(str):
    """A string value the card's YAML writes double-quoted."""


def _quote_values(x: Any) -> Any:
    if isinstance(x, str):
        return _Quoted(x)
    if isinstance(x, Mapping):
        return {k: _quote_values(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_quote_values(v) for v in x]
    return x


def front_matter(meta: Mapping[str, Any]) -> str:
    """``---``-fenced YAML. PyYAML quotes every string that needs it; no line wrapping, so no
    value can put a ``---`` line or a new key at the start of a line; no anchors or aliases."""

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    # every string value double-quoted (escape.sanitize's "yaml" rule): ``1e3``, ``no``,
    # ``null`` or ``0x10`` stay strings for YAML 1.1 (PyYAML) and 1.2 readers (the Hub's) alike
    _Dumper.add_representer(
        _Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style='"')
    )
    text = yaml.dump(
        _quote_values(dict(meta)),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=2**31 - 1,
    )
    return "---\n" + text + "---\n"


def _class_rows(s: Summary) -> list[list[str]]:
    dirs = s.class_dirs or ("",) * len(s.classes)
    return [
        [str(i), c, f"data/images/{d}/" if d else "", str(n)]
        for i, (c, d, n) in enumerate(zip(s.classes, dirs, s.per_class, strict=True))
    ]


def run_dp(s: Summary) -> Mapping | None:
    """The run's DP statement (validated by release and verify before any document is built)."""
    dp = s.run_json.get("dp")
    return dp if isinstance(dp, Mapping) else None


def dp_rows(dp: Mapping, audit: Mapping) -> list[list[str]]:
    """The guarantee, one property per row, then the audit's check of it."""
    from rcig_release.release.dp import NEIGHBOURING_TEXT, format_number

    rows = [
        ["ε (proven by the accountant)", format_number(dp["epsilon"])],
        ["δ", format_number(dp["delta"])],
        ["unit of privacy", str(dp["unit"])],
        [
            "neighbouring data sets",
            NEIGHBOURING_TEXT.get(dp["neighbouring"], str(dp["neighbouring"])),
        ],
        ["mechanism", str(dp["mechanism"])],
        ["accountant", f"{dp['accountant']} (dp-accounting {dp['accountant_version']})"],
        ["noise multiplier σ", format_number(dp["noise_multiplier"])],
        ["clip norm", format_number(dp["clip_norm"])],
        ["sampling", f"{dp['sampling']}, rate {format_number(dp['sampling_rate'])}"],
        ["steps", format_number(dp["steps"])],
        [
            "batch size",
            f"expected {format_number(dp['expected_batch_size'])}, at most {format_number(dp['max_batch_size'])}",
        ],
        ["target ε", format_number(dp["target_epsilon"])],
        ["preprocessing", str(dp["preprocessing"])],
    ]
    if dp.get("dp_mechanism") == "features":  # DP feature means (rcig/dpstat.py, docs/dp.md)
        rows.insert(
            5,
            [
                "release",
                f"one Gaussian release of a {format_number(dp['released_shape'][0])} × "
                f"{format_number(dp['released_shape'][1])} statistic ({format_number(dp['networks'])} random ConvNets), "
                "every training image used once: no sampling, no composition",
            ],
        )
    a = audit.get("dp") if isinstance(audit.get("dp"), Mapping) else {}
    if a:
        rows.append(
            [
                "audit: empirical ε lower bound at this δ",
                f"{fmt(a.get('empirical_epsilon_lower_bound'), 4)} (largest showable "
                f"{fmt(a.get('largest_showable_epsilon'), 4)}, joint confidence "
                f"{fmt(a.get('confidence'))}): {a.get('verdict')}",
            ]
        )
    return rows


DP_HEADER = ["property", "value"]


def dp_card_section(s: Summary) -> str:
    """The card's "Differential privacy" section: the guarantee, or plainly none."""
    dp = run_dp(s)
    if dp is None:
        return (
            "This release has **no differential-privacy guarantee**: it was not made by a "
            "differentially private mechanism. The audit below measures leakage empirically; it "
            "does not bound it.\n"
        )
    eps, delta = md(dp_g(dp["epsilon"])), md(dp_g(dp["delta"]))
    audit_note = (
        "The audit's empirical ε lower bound (at the same δ, at its joint confidence) must not "
        "exceed the proven ε; a bound above it would be a bug or a broken assumption, and "
        "`release` refuses such an audit. A lower bound far below ε does not make ε smaller: "
        "the guarantee is ε.\n"
        if not s.withheld
        else "The audit compared its empirical ε lower bound with the proven ε and found no "
        "contradiction (`release` refuses one); the bound itself is an audit statistic, withheld "
        "with the others.\n"
    )
    return (
        coverage.sentence(list(s.coverage), eps, delta)
        + " The guarantee is with respect to adding or removing **one training image** of the "
        "private data: for any two training sets that differ in one image, the probability of "
        "any value of the covered files differs by at most a factor e^ε, except with probability "
        "δ. The proof covers the mechanism below; ε was computed by the accountant and "
        "`rcig-release verify` recomputes it from the noise multiplier, sampling rate, steps and "
        "δ.\n\n"
        + _md_table(DP_HEADER, dp_rows(dp, s.audit))
        + "\n\n"
        + audit_note
        + "\nWhat the (ε, δ) statement covers, file by file:\n\n"
        + _md_table(COVERAGE_HEADER, [list(r) for r in s.coverage])
        + "\n"
    )


COVERAGE_HEADER = ["file", "covered by (ε, δ)", "covered", "not covered"]


def dp_g(x: Any) -> str:
    from rcig_release.release.dp import format_number

    return format_number(x)


@dataclasses.dataclass(frozen=True)
class Plain:
    """The plain-language summary both documents open with (``plain_summary``)."""

    verdict: str  # one sentence
    may_claim: tuple[str, ...]
    may_not_claim: tuple[str, ...]
    table: tuple[tuple[str, ...], ...]  # PLAIN_HEADER rows
    accuracies: str  # why the release has two accuracies
    epsilon: str  # the ε lower bound in one sentence
    not_tested: tuple[str, ...]


PLAIN_HEADER = (
    "what is published / trained on",
    "test accuracy",
    "strongest attack in the game (AUC)",
    "smallest p (attack at chance)",
    "leak detected?",
)


def _strongest(game_of: Mapping | None) -> tuple[str, float | None, float | None]:
    """(attack, AUC) of the game's highest-AUC attack over all records, and the smallest p of
    "this attack is at chance" over every attack and test."""
    g = (game_of or {}).get("game") if isinstance(game_of, Mapping) else None
    attacks = (g or {}).get("attacks") if isinstance(g, Mapping) else None
    best: tuple[str, float | None] = ("n/a", None)
    p_min: float | None = None
    for name in sorted(attacks or {}):
        m = _game_all(game_of, name)
        auc = m.get("auc")
        if isinstance(auc, (int, float)) and (best[1] is None or auc > best[1]):
            best = (name, float(auc))
        for p in (m.get("p_value") or {}).values():
            if isinstance(p, (int, float)) and (p_min is None or p < p_min):
                p_min = float(p)
    return best[0], best[1], p_min


def _alpha_t(d: Decision) -> float | None:
    return next((float(r.limit) for r in d.rules if r.comparison == "p >"), None)


def _effects(d: Decision) -> list[tuple[str, float]]:
    """The effect sizes the audit's overall tests could detect, from the passed rules' notes."""
    found: dict[str, tuple[str, float]] = {}
    for r in d.rules:
        m = _GAME_RULE.match(r.name)
        e = re.search(
            r"(AUC|TPR at FPR [0-9.e-]+) ([0-9.e-]+) detected with power ([0-9.]+)", r.note
        )
        if not r.passed or m is None or m["group"] != "all" or e is None:
            continue
        what = (
            e[1]
            .replace("TPR at FPR 0.01", "TPR at 1 % FPR")
            .replace("TPR at FPR 0.001", "TPR at 0.1 % FPR")
        )
        power = float(e[3])
        if what not in found or power < found[what][1]:
            found[what] = (f"{what} {e[2]}" if what == "AUC" else f"{e[2]} {what}", power)
    # the power rounded down: "at least 0.99", never a rounded-up 1.00
    return [(text, math.floor(power * 100) / 100) for text, power in found.values()]


def plain_summary(s: Summary, esc: Callable[[str], str]) -> Plain:
    """Verdict, claims, accuracy against leakage, the ε bound and what was not tested, in words:
    a pure function of the bundle's inputs (verify rebuilds it byte for byte). ``esc`` escapes
    every piece that came from an input (policy and attack names) for the target format
    (``escape.md`` for the card; ``str`` for the report, whose template escapes everything); the
    table's cells are left raw (the table renderers escape them)."""
    assert s.decision is not None and s.safety is not None
    d = s.decision
    n_rules, n_failed = len(d.rules), len(d.failed)
    detected = [r for r in d.rules if outcome_text(r) == "LEAK DETECTED"]
    undecidable = [r for r in d.rules if outcome_text(r) == "undecidable"]
    shadows = shadow_count(s.audit)
    records: Mapping = got if isinstance(got := s.audit.get("records"), Mapping) else {}
    n_records = sum(
        int(v)
        for k, v in records.items()
        if k in ("members", "nonmembers") and isinstance(v, int) and not isinstance(v, bool)
    )
    if s.verdict == "pass":
        verdict = (
            f"Released: policy {esc(d.policy_name)} passed (all {n_rules} rules) and the memorisation "
            "check found no memorised training record."
        )
    else:
        verdict = (
            f"Released with an override: policy {esc(d.policy_name)} did not pass ({n_failed} of "
            f"{n_rules} rules failed: {len(detected)} leak(s) detected, {len(undecidable)} "
            "undecidable at the audit's sizes); the memorisation check found no memorised "
            "training record."
        )
    if s.demonstration:
        verdict += " " + DEMO_NOTE.split(":")[0] + "."
    effects = _effects(d)
    claim = []
    if s.verdict == "pass":
        attacks = sorted((s.audit.get("game") or {}).get("attacks") or {})
        claim.append(
            f"No membership-inference attack the audit ran ({esc(', '.join(attacks)) or 'none'}) "
            f"beat chance significantly on {fmt(shadows)} shadow pipelines"
            + (f" over {n_records} audited records." if n_records else ".")
        )
        if effects:
            least = min(p for _, p in effects)
            claim.append(
                "A leak at least as large as "
                + " or ".join(t for t, _ in effects)
                + f" would have been detected with probability at least {least:.2f}."
            )
    claim.append(
        "No released image is a copy of a private training record, nor a flipped, shifted, "
        "blended or noised one, at the memorisation check's 5 % false-refusal rate."
    )
    dp = run_dp(s)
    if dp is not None:
        claim.append(
            f"The images are ({dp_g(dp['epsilon'])}, {dp_g(dp['delta'])})-differentially private "
            "with respect to adding or removing one training image (the accountant's proof)."
        )
    not_claim = []
    if s.demonstration:
        not_claim.append(
            "That the release is privacy-audited: this was a demonstration at reduced sizes."
        )
    if s.verdict != "pass":
        not_claim.append("That the release passed its policy: it was released with an override.")
    if dp is None:
        not_claim.append(
            "Differential privacy or any formal guarantee: the audit measures leakage, it does not bound it."
        )
    not_claim.append(
        "That nothing leaks: leaks smaller than the sizes above, and attacks stronger than those "
        "run, could go unseen."
    )
    not_claim.append(
        "Anything about records outside the audited sample, or about groups and attributes "
        "rather than single records."
    )
    alpha_t = _alpha_t(d)
    rows = []
    acc, std = s.eval_json.get("accuracy_mean"), s.eval_json.get("accuracy_std")
    own, _ = target_accuracy(s.audit)
    attack, auc, p_min = _strongest(s.audit)
    rows.append(
        (
            f"this release ({s.n_images} synthetic images)",
            f"{fmt(acc)} ± {fmt(std)}"
            + (f" (audit targets {fmt(own)})" if own is not None else ""),
            f"{fmt(auc)} ({attack})",
            fmt_p(p_min),
            "yes" if detected else "no",
        )
    )
    for kind, label in (
        ("naive", f"naive release ({s.n_images} random real training images)"),
        ("real", "a network trained on the full private training split"),
    ):
        b = baseline(s.audit, kind)
        if b is None:
            continue
        b_acc, _ = target_accuracy(b)
        attack, auc, p_min = _strongest(b)
        leak = "n/a" if p_min is None or alpha_t is None else ("yes" if p_min <= alpha_t else "no")
        rows.append((label, fmt(b_acc), f"{fmt(auc)} ({attack})", fmt_p(p_min), leak))
    accuracies = (
        "Accuracy is on the private test split. The release has two: `evaluate`'s (mean ± sd of "
        f"{esc(fmt(s.eval_json.get('models')))} {esc(fmt(s.eval_json.get('arch')))} networks trained by the "
        "evaluation protocol) and the audit's target networks' (trained by the audit on the same "
        'images with its own settings); they differ by training randomness and settings. "Leak '
        "detected\" means some attack beat chance at the policy's per-test level "
        + (f"(p ≤ {fmt_p(alpha_t)})" if alpha_t is not None else "")
        + "; the baselines show what a release of real images, or a model of all the data, gives away."
    )
    eps_all: list[tuple[float, Any]] = [
        (float(m["epsilon_lower_bound"]), m.get("max_epsilon"))
        for name in sorted((s.audit.get("game") or {}).get("attacks") or {})
        if isinstance((m := _game_all(s.audit, name)).get("epsilon_lower_bound"), (int, float))
    ]
    info = (s.audit.get("game") or {}).get("epsilon") or {}
    if eps_all:
        eps, cap = max(eps_all, key=lambda t: t[0])
        conf, delta = info.get("confidence"), info.get("delta")
        epsilon = (
            f"Empirical ε lower bound {fmt(eps, 2)} (δ = {fmt(delta)}; the largest these sizes "
            f"could show is {fmt(cap, 2)}): with {fmt_pct(conf)} confidence, no ε-differential-privacy "
            f"guarantee with ε below {fmt(eps, 2)} can hold for this release pipeline"
            + (
                "; 0 means the audit found no evidence against privacy, which is not a proof of it."
                if eps == 0
                else "."
            )
        )
    else:
        epsilon = "The audit gave no ε lower bound."
    names = {gm["test"] for r in d.rules if (gm := _GAME_RULE.match(r.name))}
    not_tested = []
    if "tpr_at_fpr_0.001" not in names:
        not_tested.append("TPR at 0.1 % FPR (the policy does not apply it)")
    if "epsilon_lower_bound" not in names:
        not_tested.append("a limit on the ε lower bound (the policy does not apply it)")
    if undecidable:
        not_tested.append(
            f"{len(undecidable)} rule(s) the audit's sizes could not decide (listed below; they "
            "count as failed)"
        )
    not_tested.append(
        "white-box attacks on the distillation, attribute or group inference, reconstruction of "
        "records, and records outside the audited sample"
    )
    return Plain(
        verdict=verdict,
        may_claim=tuple(claim),
        may_not_claim=tuple(not_claim),
        table=tuple(rows),
        accuracies=accuracies,
        epsilon=epsilon,
        not_tested=tuple(not_tested),
    )


def plain_md(s: Summary) -> str:
    p = plain_summary(s, md)
    lines = ["## Summary", "", f"**{p.verdict}**", ""]
    if s.demonstration:
        lines += [f"> {DEMO_NOTE}", ""]
    lines += ["What the custodian may claim:", ""] + [f"- {c}" for c in p.may_claim]
    lines += ["", "What they may not claim:", ""] + [f"- {c}" for c in p.may_not_claim]
    lines += ["", _md_table(PLAIN_HEADER, p.table), "", p.accuracies, "", p.epsilon, ""]
    lines += ["Not tested:", ""] + [f"- {c}" for c in p.not_tested] + [""]
    return "\n".join(lines) + "\n"


def rules_md(d: Decision) -> str:
    """The failed rules: decided failures in a table, undecidable ones one line per family."""
    decided = [r for r in d.failed if outcome_text(r) != "undecidable"]
    out = []
    if decided:
        out += [
            "Failed rules:",
            "",
            _md_table(
                ["rule", "value", "limit", "outcome", "note"], [_rule_row(r) for r in decided]
            ),
            "",
        ]
    fams = undecidable_families(d.failed)
    if fams:
        out += ["Undecidable at the audit's sizes (they fail closed), one line per family:", ""]
        out += [f"- {md(family_line(t, rs))}" for t, rs in fams] + [""]
    return ("\n" + "\n".join(out)) if out else ""


DEMO_NOTE = (
    "A demonstration at reduced audit sizes, not a privacy audit: the audit ran with few shadow "
    "pipelines, so only large leaks could have been detected, and some tests were not applied. "
    "The memorisation check ran in full. Do not publish this bundle as private data; audit with "
    "the default policy's sizes (`--shadows 16`) and release with `--policy default` first."
)


def _ipc(s: Summary) -> int | None:
    ipc = _config(s).get("ipc")
    return ipc if isinstance(ipc, int) and not isinstance(ipc, bool) and ipc > 0 else None


def soft_label_md(s: Summary) -> str:
    """What the soft labels are and how to use them, with their range in this release."""
    rows = s.image_labels
    if rows:
        sums = [sum(r) for r in rows]
        vals = [v for r in rows for v in r]
        rng = (
            f" In this release the entries lie in [{fmt(min(vals), 2)}, {fmt(max(vals), 2)}] and "
            f"the rows sum to {fmt(min(sums), 2)} … {fmt(max(sums), 2)}."
        )
    else:
        rng = ""
    return f"""### Soft labels

The labels are not probabilities. RCIG learns them together with the images as the **regression
targets** of its kernel-ridge head (initialised at one-hot − 1/C), so they are unnormalised: entries
can be negative and rows need not sum to 1.{rng} Use them as they were used here: train with a
mean-squared-error loss on the `soft_label` vector (how `rcig-release evaluate` trains). Their
argmax is the `label` column; a softmax of them is not a calibrated class distribution. For
example, with the `datasets` library:

```python
ds = datasets.load_dataset("<this directory>", split="train").with_format("numpy")  # ds["image"], ds["soft_label"], ds["label"]
```

"""


def class_assignment_md(s: Summary) -> str:
    """How images are filed into class folders, and the images whose folder is not the class
    they were distilled for (image i was distilled for class i // ipc)."""
    ipc = _ipc(s)
    text = (
        "Each image is filed under the class its soft label ranks highest (its `label`). RCIG "
        "distils `ipc` images for each class in turn (image i is distilled for class i // ipc), "
        "and the learned label can come to rank another class highest."
    )
    if not s.image_labels or ipc is None:
        return text + "\n"
    moved = []
    for i, row in enumerate(s.image_labels):
        filed, made_for = max(range(len(row)), key=lambda c: row[c]), i // ipc
        if made_for < len(s.classes) and filed != made_for:
            moved.append(
                f"image {i} (distilled for {md(s.classes[made_for])}, filed under "
                f"{md(s.classes[filed])})"
            )
    if not moved:
        return (
            text + " In this release every image is filed under the class it was distilled for.\n"
        )
    empty = [md(c) for c, n in zip(s.classes, s.per_class, strict=False) if n == 0]
    return (
        text
        + f" In this release {len(moved)} image(s) are filed elsewhere: "
        + "; ".join(moved)
        + "."
        + (f" Classes with no image in their folder: {', '.join(empty)}." if empty else "")
        + "\n"
    )


def citation_md(s: Summary) -> str:
    versions = got if isinstance(got := s.run_json.get("versions"), Mapping) else {}
    version = versions.get("rcig_release")
    version_line = (
        f"  version = {{{version}}},\n"
        if isinstance(version, str) and version.isprintable() and "}" not in version
        else ""
    )
    return f"""## Citation

The distillation method (RCIG):

```bibtex
@inproceedings{{loo2023rcig,
  title = {{Dataset Distillation with Convexified Implicit Gradients}},
  author = {{Loo, Noel and Hasani, Ramin and Lechner, Mathias and Amini, Alexander and Rus, Daniela}},
  booktitle = {{Proceedings of the 40th International Conference on Machine Learning (ICML)}},
  year = {{2023}}
}}
```

The release tool (distillation, audit, policy-gated release):

```bibtex
@software{{rcig_release,
  title = {{rcig-release: distil, audit and release a private image set}},
{version_line}  note = {{Dataset distillation with RCIG, membership-inference audit, policy-gated release}}
}}
```
"""


def _card_head(s: Summary, out_of_scope_dp: str, summary_md: str = "") -> str:
    """The card from its title to **Loading**: what the set is, how it was made, its files."""
    cfg = _config(s)
    data = got if isinstance(got := s.run_json.get("data"), Mapping) else {}
    audit_use = "" if s.withheld else ", and checking the audit in `report/`"
    report_item = (
        ""
        if s.withheld
        else "- `report/`: `audit.json` (the full audit), `game_scores.npz` and `game_records.json` "
        "(the\n  audit's game: its coins and every attack's scores, each record's class and init "
        "flag; every\n  statistic the release gate read is recomputed from them), `roc.png` (the "
        "game's ROC per\n  attack, AUC in the legend), `histograms.png` (the game's member and "
        "non-member scores per\n  attack), `report.html` (open it in a browser).\n"
    )
    return f"""
# {md(s.name)}

A synthetic image-classification set of {s.n_images} images ({len(s.classes)} classes,
{"×".join(str(d) for d in s.image_shape)} pixels) distilled with RCIG from a private image set,
released behind a privacy policy after a membership-inference audit. The images are optimised
synthetic images, not photographs of people or records, but they are derived from private data:
read **Privacy considerations** before using them.

{summary_md}
## Dataset details

- Curated by: the data custodian who ran `rcig-release` (the tool records no names).
- License: {s.license_spdx or "unspecified: set one with `--license` before publishing"}.
- Classes: {len(s.classes)}, listed with their ids and folders under **Classes** below.
- Content digest of the released arrays: `{md(s.content_sha256)}`.

## How it was made

RCIG (dataset distillation with a kernel-ridge head on a linearised ConvNet and implicit
gradients) ran on the private training split for {md(fmt(cfg.get("steps")))} outer steps at
{md(fmt(cfg.get("ipc")))} image(s) per class, seed {md(fmt(cfg.get("seed")))}, starting from
**{md(_init_mode(s))}** initial images ({_init_text(s)}).
The labels are learned soft labels (one row of `data/labels.csv` per image; **Soft labels**
below says what they are). The full resolved
configuration, the software versions and the private data's keyed fingerprint
({md(data.get("fingerprint_hmac", "n/a"))}: HMAC-SHA256 under a key the custodian keeps, so only
they can check which data made this release; no unsalted hash of the private data is published)
are in `provenance.json`.

## Uses

Direct use: training or benchmarking image classifiers where the private data may not be shared,
dataset-distillation research{audit_use}.

Out-of-scope use: re-identifying or reconstructing people or records of the private data;
treating the images as real samples of the source distribution; {out_of_scope_dp}.

## Dataset structure

- `data/images/<class>/<i>.png`: image `i` of the release (8-bit PNG), filed under the class its
  soft label ranks highest.
- `data/distilled.npz`: `images` float32 [N,H,W,C] in [0,1], `labels` float32 [N,C] soft labels,
  `classes` [C].
- `data/labels.csv`: `index,file,class` and one soft-label column per class (a text cell that
  a spreadsheet would read as a formula, starting with `=`, `+`, `-`, `@` or `'`, is written
  with a leading `'`).
- `data/metadata.jsonl`: one line per image, `file_name`, `index`, `label` (the class id) and
  `soft_label` (the soft label, one value per class in the order below); the Hugging Face
  `imagefolder` builder attaches it to the images.
{report_item}- `policy/verdict.json`, `provenance.json`, `croissant.json`, `manifest-sha256.txt`.

Splits: one, `train`, of {s.n_images} examples (the whole release; test on your own data).

{soft_label_md(s)}### Classes

Class ids are the positions in `classes` of `data/distilled.npz` and the column order of the soft
labels; the folder is where the images whose soft label ranks that class highest are filed.
{class_assignment_md(s)}
{_md_table(["id", "class", "folder", "images"], _class_rows(s))}

### Loading

`datasets.load_dataset("<this directory or repository>")` reads the `dataset_info` above: `label`
is a `ClassLabel` with these names and ids, `soft_label` the soft label, `index` the row of
`data/distilled.npz`. `load_dataset("imagefolder", data_dir=".../data")` gives the same integer
`label` and `soft_label` (from `data/metadata.jsonl`) without the class names.

"""


def _out_of_scope_dp(s: Summary) -> str:
    dp = run_dp(s)
    if dp is None:
        return (
            "any claim of formal differential privacy (none is given: the audit "
            "measures leakage empirically, it does not bound it)"
        )
    return (
        f"any privacy claim beyond the ({md(dp_g(dp['epsilon']))}, "
        f"{md(dp_g(dp['delta']))}) guarantee of **Differential privacy** (it is "
        "about one training image, not about groups of images or people with "
        "several images, and it covers only the files it lists)"
    )


def _card_withheld(s: Summary) -> str:
    """The card of a DP bundle that withholds its private statistics (coverage.WITHHELD): the
    head, the guarantee with its file-by-file coverage, and of the decision only what the bundle
    publishes (verdict, policy, failed rule names on an override); no audit figure, distance,
    p-value or accuracy."""
    assert s.outcome is not None
    o = s.outcome
    override_text = ""
    if s.override and o.verdict == "overridden":
        override_text = (
            "\n**The policy did not pass; this bundle was released with an override.** "
            f"Reason given: {md(s.override)}. Failed rules: "
            + ", ".join(f"`{md(n)}`" for n in o.failed)
            + ".\n"
        )
    elif s.override:
        override_text = f"\nAn override was given but not needed (the policy passed). Reason given: {md(s.override)}\n"
    real_init_note = (
        " The images started from real private images and may retain visual traits of them."
        if _init_mode(s) == "real"
        else ""
    )
    demo = f"> {md(DEMO_NOTE)}\n" if s.demonstration else ""
    return f"""{_card_head(s, _out_of_scope_dp(s), demo)}## Differential privacy

{dp_card_section(s)}
## Privacy considerations

Policy **{md(o.policy_name)}** (policy file sha256 {md(o.policy_sha256)}): verdict **{o.verdict}**.
{override_text}
Before this bundle was written, `rcig-release audit` attacked the pipeline with
membership-inference attacks over shadow pipelines, and `rcig-release release` applied the policy
to the audit and ran the memorisation check on every image against the private training and
held-out splits; the memorisation check passed (no bundle is written otherwise). The verdict is a function of the private data that the (ε, δ)
statement does not cover (see the table above). The audit's figures (attack statistics, p-values,
ε lower bounds), the memorisation check's distances and p-values and the accuracies measured on
the private test split are **not in this bundle**: they are statistics of the private data outside
the mechanism. The custodian keeps them in the run directory; `rcig-release release
--include-private-stats` publishes them, and the card then lists them as not covered.

## Utility

Not published: the accuracy of networks trained on these images was measured on the private test
split, a statistic the guarantee does not cover. Measure it on public data of the same task.

## Bias, risks, and limitations

A handful of images per class summarises the private training split; classes or sub-groups that
are rare there may be poorly represented, and accuracy can differ between classes.{real_init_note}
Noise added for differential privacy lowers the images' fidelity.

## Verification

Run `rcig-release verify <bundle>`: it recomputes every sha256 in `manifest-sha256.txt`, checks the
images and labels against `data/distilled.npz`, recomputes ε from the noise multiplier, sampling
rate, steps and δ with the accountant, and rebuilds this card. The verdict cannot be recomputed
from this bundle (its evidence is withheld). The custodian can check the keyed fingerprint with
`rcig-release verify <bundle> --fingerprint-key KEY --run RUN`.

{citation_md(s)}"""


def dataset_card(s: Summary) -> str:
    """README.md: YAML front matter (HF dataset card metadata), then the card body."""
    if s.withheld:
        return front_matter(card_metadata(s)) + _card_withheld(s)
    assert s.decision is not None and s.safety is not None  # the statistics are in the bundle
    cc = s.audit.get("copy_check") or {}
    verdict = s.verdict
    override_text = ""
    if s.override and not s.decision.passed:
        override_text = (
            "\n**The policy did not pass; this bundle was released with an override.** "
            f"Reason given: {md(s.override)}\n"
        )
    elif s.override:
        override_text = f"\nAn override was given but not needed (the policy passed). Reason given: {md(s.override)}\n"
    failed = s.decision.failed
    failed_text = rules_md(s.decision)
    n_shadows = shadow_count(s.audit)
    real_init_note = (
        " The images started from real private images and may retain visual traits of them."
        if _init_mode(s) == "real"
        else ""
    )
    out_of_scope_dp = _out_of_scope_dp(s)
    if run_dp(s) is None:
        audit_dp_note = "any formal privacy guarantee"
    else:
        audit_dp_note = (
            "a formal guarantee (that is the accountant's, in **Differential "
            "privacy**; the audit only checks it is not contradicted)"
        )
    body = f"""{_card_head(s, out_of_scope_dp, plain_md(s))}## Differential privacy

{dp_card_section(s)}
## Privacy considerations

Policy **{md(s.decision.policy_name)}** (policy file sha256 {md(s.decision.policy_sha256)}):
verdict **{verdict}** ({len(s.decision.rules) - len(failed)} of {len(s.decision.rules)} rules passed).
{override_text}{failed_text}
Headline audit figures. *This release*: the adversary holds it; members are private training
records, non-members held-out records, thresholds set on separate held-out calibration images
(descriptive). *Game*: {md(fmt(n_shadows))} shadow pipelines re-run the release pipeline on data whose
membership the audit drew by fair coins, each attacked with the other fold's shadows as references;
the verdict's privacy rules test these guesses ("p" is the probability of an AUC this high if the
attack were at chance; the ε lower bound holds at the audit's stated confidence, with the largest
value its sizes could show). Last columns: the same game on the naive release (the same number of
random real training images) and on a network trained on all the private training data:

{_md_table(HEADLINE_HEADER, headline_rows(s.audit))}

Copy check: {md(fmt(cc.get("near_copies")))} released image(s) are near copies of a private training
record (threshold {md(fmt(cc.get("threshold"), 4))}). Release safety check, recomputed from the private
splits ({md(s.safety.metric)} distance): {md(s.safety.describe())}.
{md(s.safety.coverage())}

What the audit does not cover: attacks stronger than those listed (white-box access to the
distillation, more shadow models, other signals), leakage about groups or attributes rather than
membership of single records, records outside the audited sample, and {audit_dp_note}. "n/a" means the audit could not resolve the figure (for example too few non-members to
measure a TPR at 0.1 % FPR).

## Utility

{_md_table(["trained on", "test accuracy", "architecture", "networks"], _utility_rows(s))}

## Bias, risks, and limitations

A handful of images per class summarises the private training split; classes or sub-groups that
are rare there may be poorly represented, and accuracy can differ between classes.{real_init_note}
The audit figures are estimates with sampling error (intervals in `report/audit.json`).

## Verification

Run `rcig-release verify <bundle>`: it recomputes every sha256 in `manifest-sha256.txt`, checks
that the audit, the verdict and the provenance belong to the released arrays, recomputes the
game's statistics from `report/game_scores.npz` and the verdict from them. The custodian can
check the keyed fingerprint with `rcig-release verify <bundle> --fingerprint-key KEY --run RUN`.

{citation_md(s)}"""
    return front_matter(card_metadata(s)) + body


REPORT_TEMPLATE = "report.html.j2"  # rcig_release/release/templates/ (package data)


@functools.cache
def report_environment() -> jinja2.Environment:
    """The Jinja2 environment the report is rendered in: escaping by construction (autoescape on
    for every template, no ``|safe`` in the template), and an undefined name is an error."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("rcig_release.release", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], bad_col: int | None = None
) -> dict[str, Any]:
    """A table for the template: header and cells as plain strings; a cell "FAIL" in ``bad_col``
    is marked bad."""
    return {
        "header": [str(h) for h in header],
        "rows": [[str(c) for c in row] for row in rows],
        "bad_col": bad_col,
    }


def _b64(png: bytes | None) -> str | None:
    return base64.b64encode(png).decode("ascii") if png else None


def _dp_context(s: Summary) -> dict[str, Any] | None:
    dp = run_dp(s)
    if dp is None:
        return None
    covered = [f for f, status, _, _ in s.coverage if status == "yes"]
    return {
        "epsilon": dp_g(dp["epsilon"]),
        "delta": dp_g(dp["delta"]),
        "covered": ", ".join(covered) or "no file",
        "guarantee": _table(DP_HEADER, dp_rows(dp, s.audit)),
        "coverage": _table(COVERAGE_HEADER, s.coverage),
    }


ROC_NOTE = (
    "The audit's membership game: every shadow pipeline attacked as a target by its fold's "
    "references, each (shadow, record) guess labelled by its coin (IN: the record was in that "
    "shadow's private data). The legend's AUC is the game's AUC over all records "
    "(report/audit.json: each attack's groups.all.auc under game.attacks), which verify "
    "recomputes from "
    "report/game_scores.npz; the histograms show the same guesses' scores."
)
NO_GAME_ROC_NOTE = (
    "This bundle has no game scores: the ROC is drawn from the release split's scores or the "
    "audit's operating points, not from the membership game, and there are no score histograms."
)
GALLERY_NOTE = (
    "The custodian can look at the released images closest to a private training record, each "
    "beside that record, with rcig-release audit --private-gallery DIR (written outside the run "
    "directory and never to a bundle: it holds private pixels and must not be shared)."
)


def report_context(
    s: Summary,
    *,
    roc: bytes,
    grid: bytes,
    copy_plot: bytes | None,
    histograms: bytes | None = None,
) -> dict[str, Any]:
    """What the report template is rendered with: plain data (strings, numbers, rows of strings,
    the figures' base64 text), nothing escaped in advance; the template's autoescape does it."""
    assert s.decision is not None and s.safety is not None  # no report when they are withheld
    d, safety = s.decision, s.safety
    headline = {
        "pass": "Policy passed",
        "fail": "Policy failed",
        "overridden": "Policy failed, released with an override",
    }[s.verdict]
    cc = s.audit.get("copy_check") or {}
    cc_rows = [
        [
            i,
            fmt(r["nearest_train"], 4),
            fmt(r["nearest_test"], 4),
            fmt(r["ratio"]),
            fmt(r["near_copy"]),
        ]
        for i, r in enumerate(copy_rows(cc))
    ]
    audit_cfg = got if isinstance(got := s.audit.get("config"), Mapping) else {}
    rule_header = ["rule", "value", "limit", "outcome", "note"]
    decided = [r for r in d.failed if outcome_text(r) != "undecidable"]
    plain = plain_summary(s, str)  # raw text: the template escapes it
    return {
        "name": s.name,
        "verdict": s.verdict,
        "headline": headline,
        "policy_name": d.policy_name,
        "n_rules": len(d.rules),
        "n_passed": len(d.rules) - len(d.failed),
        "safety": {
            "passed": safety.passed,
            "flagged": safety.flagged,
            "exact_copies": safety.exact_copies,
            "near_copies": safety.within_threshold,
        },
        "override": s.override or "",
        "plain": plain,
        "demo_note": DEMO_NOTE if s.demonstration else "",
        "summary_table": _table(PLAIN_HEADER, plain.table),
        "failed": _table(rule_header, [_rule_row(r) for r in decided], 3),
        "families": [family_line(t, rs) for t, rs in undecidable_families(d.failed)],
        "dp": _dp_context(s),
        "roc": _b64(roc),
        "histograms": _b64(histograms),
        "roc_note": ROC_NOTE if histograms else NO_GAME_ROC_NOTE,
        "gallery_note": GALLERY_NOTE,
        "grid": _b64(grid),
        "copy_plot": _b64(copy_plot),
        "classes": _table(["id", "class", "folder", "images"], _class_rows(s)),
        "copy": {
            "near_copies": fmt(cc.get("near_copies")),
            "threshold": fmt(cc.get("threshold"), 4),
            "metric": safety.metric,
            "describe": safety.describe(),
            "coverage": safety.coverage(),
            "table": _table(
                [
                    "image",
                    "nearest train distance",
                    "nearest held-out distance",
                    "ratio",
                    "near copy",
                ],
                cc_rows,
            ),
        },
        "utility": _table(
            ["trained on", "test accuracy", "architecture", "networks"], _utility_rows(s)
        ),
        "baselines": _table(HEADLINE_HEADER, headline_rows(s.audit)),
        "rules": _table(rule_header, [_rule_row(r) for r in d.rules], 3),
        "config": _table(["key", "value"], [[k, fmt(v)] for k, v in sorted(audit_cfg.items())]),
        "content_sha256": s.content_sha256,
    }


def report_html(
    s: Summary,
    *,
    roc: bytes,
    grid: bytes,
    copy_plot: bytes | None,
    histograms: bytes | None = None,
) -> str:
    """report/report.html: one self-contained page (no external resources, images embedded),
    rendered from templates/report.html.j2 with autoescape on. A pure function of its inputs:
    ``verify`` rebuilds the page with it and compares byte for byte. ``histograms``: the game's
    score histograms (None: a bundle without game scores; the page says so)."""
    context = report_context(s, roc=roc, grid=grid, copy_plot=copy_plot, histograms=histograms)
    return report_environment().get_template(REPORT_TEMPLATE).render(context)
