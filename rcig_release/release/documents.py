"""The human-readable bundle files: the Hugging Face dataset card and the offline HTML report.

Both are built from the same ``Summary`` (headline audit numbers, verdict, utility) so they never
disagree. Every string that came from an input or the command line is escaped for where it goes:
``escape.md`` in the card's Markdown, ``html.escape`` in the report, and the card's YAML front
matter is emitted by PyYAML (never by string formatting).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

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
    class_dirs: tuple[str, ...] = ()  # data/images/<dir> of each class (bundle.class_dir_names)
    private_stats: str = coverage.INCLUDED  # coverage.WITHHELD: a DP bundle without them
    # what the (ε, δ) statement covers, file by file (coverage.rows; DP bundles only)
    coverage: tuple[tuple[str, str, str, str], ...] = ()
    outcome: Outcome | None = None  # the published decision when the statistics are withheld

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
    return f"{r.comparison} {fmt(r.limit)}"


def _rule_row(r: Rule) -> list[str]:
    return [r.name, fmt(r.value), limit_text(r), "pass" if r.passed else "FAIL", r.note]


def _config(s: Summary) -> Mapping:
    c = s.run_json.get("config")
    return c if isinstance(c, Mapping) else {}


def _init_mode(s: Summary) -> str:
    init = s.run_json.get("init")
    if isinstance(init, Mapping) and init.get("mode"):
        return str(init["mode"])
    return str(_config(s).get("init", "unknown"))


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
            "dataset_info": {"features": features},
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


def front_matter(meta: Mapping[str, Any]) -> str:
    """``---``-fenced YAML. PyYAML quotes every string that needs it; no line wrapping, so no
    value can put a ``---`` line or a new key at the start of a line; no anchors or aliases."""

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    text = yaml.dump(
        dict(meta),
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
    from rcig_release.release.dp import NEIGHBOURING_TEXT, _g

    rows = [
        ["ε (proven by the accountant)", _g(dp["epsilon"])],
        ["δ", _g(dp["delta"])],
        ["unit of privacy", str(dp["unit"])],
        [
            "neighbouring data sets",
            NEIGHBOURING_TEXT.get(dp["neighbouring"], str(dp["neighbouring"])),
        ],
        ["mechanism", str(dp["mechanism"])],
        ["accountant", f"{dp['accountant']} (dp-accounting {dp['accountant_version']})"],
        ["noise multiplier σ", _g(dp["noise_multiplier"])],
        ["clip norm", _g(dp["clip_norm"])],
        ["sampling", f"{dp['sampling']}, rate {_g(dp['sampling_rate'])}"],
        ["steps", _g(dp["steps"])],
        [
            "batch size",
            f"expected {_g(dp['expected_batch_size'])}, at most {_g(dp['max_batch_size'])}",
        ],
        ["target ε", _g(dp["target_epsilon"])],
        ["preprocessing", str(dp["preprocessing"])],
    ]
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
    from rcig_release.release.dp import _g

    return _g(x)


DEMO_NOTE = (
    "A demonstration at reduced audit sizes, not a privacy audit: the audit ran with few shadow "
    "pipelines, so only large leaks could have been detected, and some tests were not applied. "
    "The memorisation check ran in full. Do not publish this bundle as private data; audit with "
    "the default policy's sizes (`--shadows 16`) and release with `--policy default` first."
)


def _card_head(s: Summary, out_of_scope_dp: str) -> str:
    """The card from its title to **Loading**: what the set is, how it was made, its files."""
    cfg = _config(s)
    data = got if isinstance(got := s.run_json.get("data"), Mapping) else {}
    audit_use = "" if s.withheld else ", and checking the audit in `report/`"
    report_item = (
        ""
        if s.withheld
        else "- `report/`: `audit.json` (the full audit), `game_scores.npz` and `game_records.json` "
        "(the\n  audit's game: its coins and every attack's scores, each record's class and init "
        "flag; every\n  statistic the release gate read is recomputed from them), `roc.png`, "
        "`report.html` (open it in\n  a browser).\n"
    )
    return f"""
# {md(s.name)}

A synthetic image-classification set of {s.n_images} images ({len(s.classes)} classes,
{"×".join(str(d) for d in s.image_shape)} pixels) distilled with RCIG from a private image set,
released behind a privacy policy after a membership-inference audit. The images are optimised
synthetic images, not photographs of people or records, but they are derived from private data:
read **Privacy considerations** before using them.
{"" if not s.demonstration else chr(10) + "> **" + DEMO_NOTE.split(":")[0] + ".**" + DEMO_NOTE[DEMO_NOTE.index(":") + 1 :] + chr(10)}
## Dataset details

- Curated by: the data custodian who ran `rcig-release` (the tool records no names).
- License: {s.license_spdx or "unspecified: set one with `--license` before publishing"}.
- Classes: {len(s.classes)}, listed with their ids and folders under **Classes** below.
- Content digest of the released arrays: `{md(s.content_sha256)}`.

## How it was made

RCIG (dataset distillation with a kernel-ridge head on a linearised ConvNet and implicit
gradients) ran on the private training split for {md(fmt(cfg.get("steps")))} outer steps at
{md(fmt(cfg.get("ipc")))} image(s) per class, seed {md(fmt(cfg.get("seed")))}, starting from
**{md(_init_mode(s))}** initial images ({"random real private training images, the RCIG default" if _init_mode(s) == "real" else "random noise"}).
The labels are learned soft labels (one row of `data/labels.csv` per image). The full resolved
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

### Classes

Class ids are the positions in `classes` of `data/distilled.npz` and the column order of the soft
labels; the folder is where the images whose soft label ranks that class highest are filed.

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
    return f"""{_card_head(s, _out_of_scope_dp(s))}## Differential privacy

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
"""


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
    failed_text = ""
    if failed:
        failed_text = (
            "\nFailed rules:\n\n"
            + _md_table(
                ["rule", "value", "limit", "outcome", "note"], [_rule_row(r) for r in failed]
            )
            + "\n"
        )
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
    body = f"""{_card_head(s, out_of_scope_dp)}## Differential privacy

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
"""
    return front_matter(card_metadata(s)) + body


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:70em;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;font-size:.92em}th{background:#f3f3f3}.verdict{padding:1em 1.4em;border-radius:6px;
font-size:1.25em;margin:1em 0}.pass{background:#e5f6e5;border:2px solid #3a3}.fail{background:#fde8e8;
border:2px solid #c33}.overridden{background:#fff4d6;border:2px solid #d90}.bad{color:#b00;
font-weight:bold}img{max-width:100%;border:1px solid #ddd}code{background:#f5f5f5;padding:0 .2em}
"""


def _h_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], bad_col: int | None = None
) -> str:
    out = ["<table><thead><tr>"] + [f"<th>{html.escape(str(h))}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, c in enumerate(row):
            cls = ' class="bad"' if bad_col is not None and i == bad_col and c == "FAIL" else ""
            out.append(f"<td{cls}>{html.escape(str(c))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return f"<p>({html.escape(alt)}: not available in the audit)</p>"
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _dp_html(s: Summary) -> str:
    dp = run_dp(s)
    if dp is None:
        return (
            "<p>This release has <b>no differential-privacy guarantee</b>: it was not made by a "
            "differentially private mechanism; the audit measures leakage empirically, it does "
            "not bound it.</p>"
        )
    covered = [f for f, status, _, _ in s.coverage if status == "yes"]
    return (
        f"<p>The (ε = {html.escape(dp_g(dp['epsilon']))}, δ = {html.escape(dp_g(dp['delta']))}) "
        "differential-privacy guarantee, with respect to adding or removing one training image, "
        f"covers {html.escape(', '.join(covered) or 'no file')} (the mechanism's output and what "
        "derives only from it and public facts). It does <b>not</b> cover this report, which "
        "shows statistics of the private data computed outside the mechanism, nor the other "
        "files the table lists as not covered.</p>"
        + _h_table(DP_HEADER, dp_rows(dp, s.audit))
        + _h_table(COVERAGE_HEADER, [list(r) for r in s.coverage])
    )


def report_html(s: Summary, *, roc: bytes, grid: bytes, copy_plot: bytes | None) -> str:
    """report/report.html: one self-contained page (no external resources, images embedded)."""
    assert s.decision is not None and s.safety is not None  # no report when they are withheld
    e = html.escape
    verdict = s.verdict
    headline = {
        "pass": "Policy passed",
        "fail": "Policy failed",
        "overridden": "Policy failed, released with an override",
    }[verdict]
    override = f"<p><b>Override reason:</b> {e(s.override)}</p>" if s.override else ""
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
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{e(s.name)}: release report</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(s.name)}: release report</h1>",
        f'<div class="verdict {verdict}"><b>{e(headline)}</b>: policy <code>{e(s.decision.policy_name)}</code>, '
        f"{len(s.decision.rules) - len(s.decision.failed)} of {len(s.decision.rules)} rules passed. "
        f"Safety check: {'passed' if s.safety.passed else 'FAILED'} "
        f"({s.safety.flagged} image(s) flagged by the memorisation check; {s.safety.exact_copies} exact "
        f"copies, {s.safety.within_threshold} near copies).</div>",
        f'<p class="bad">{e(DEMO_NOTE)}</p>' if s.demonstration else "",
        override,
        (
            "<h3>Failed rules</h3>"
            + _h_table(rule_header, [_rule_row(r) for r in s.decision.failed], 3)
        )
        if s.decision.failed
        else "",
        "<h2>Differential privacy</h2>",
        _dp_html(s),
        "<h2>Membership-inference ROC (log-log)</h2>",
        _img(roc, "ROC of every attack"),
        "<h2>The released images</h2>",
        _img(grid, "released images, one row per class"),
        _h_table(["id", "class", "folder", "images"], _class_rows(s)),
        "<h2>Copy check</h2>",
        f"<p>Near copies flagged by the audit: {e(fmt(cc.get('near_copies')))} (threshold "
        f"{e(fmt(cc.get('threshold'), 4))}). Release safety check, recomputed from the private splits "
        f"({e(s.safety.metric)} distance): {e(s.safety.describe())}.</p>",
        f"<p>{e(s.safety.coverage())}</p>",
        _img(copy_plot, "copy-check distances"),
        _h_table(
            ["image", "nearest train distance", "nearest held-out distance", "ratio", "near copy"],
            cc_rows,
        )
        if cc_rows
        else "",
        "<h2>Utility</h2>",
        _h_table(["trained on", "test accuracy", "architecture", "networks"], _utility_rows(s)),
        "<h2>Baselines: the same attacks on the naive release and on a real model</h2>",
        _h_table(HEADLINE_HEADER, headline_rows(s.audit)),
        f"<h2>All policy rules ({len(s.decision.rules)})</h2>",
        "<details><summary>Show every rule with its value and limit</summary>",
        _h_table(rule_header, [_rule_row(r) for r in s.decision.rules], 3),
        "</details>",
        "<h2>Audit configuration</h2>",
        _h_table(["key", "value"], [[k, fmt(v)] for k, v in sorted(audit_cfg.items())]),
        f"<p>Content digest of the released arrays: <code>{e(s.content_sha256)}</code>. "
        "Check the bundle with <code>rcig-release verify</code>.</p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
