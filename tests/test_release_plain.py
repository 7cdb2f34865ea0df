"""The documents a non-expert reads first: a plain-language summary, p-values labelled as p, a
detection reading "leak detected", undecidable rules one line per family with the shadows that
would decide them, and a card that explains the soft labels, the class folders and how to cite."""

import json
from pathlib import Path

import pytest
import yaml

from rcig_release.audits import stats
from rcig_release.release.bundle import release
from rcig_release.release.decision import _fold_counts, evaluate_policy, shadows_to_decide
from rcig_release.release.documents import (
    class_assignment_md,
    family_line,
    outcome_text,
    undecidable_families,
    value_text,
)
from rcig_release.release.policy import load_policy, parse_policy
from rcig_release.release.verify import verify_bundle
from release_fixtures import fake_run, loader_for, private_data

ROOT = Path(__file__).resolve().parents[1]


def _inputs(run: Path):
    return (
        json.loads((run / "run.json").read_text()),
        json.loads((run / "eval.json").read_text()),
        json.loads((run / "audit/audit.json").read_text()),
    )


@pytest.fixture(scope="module")
def leak_run(tmp_path_factory):
    return fake_run(tmp_path_factory.mktemp("leak") / "run", data=private_data(), leak=True)


def test_a_significant_result_reads_leak_detected_even_when_underpowered(leak_run):
    policy = load_policy("default")
    d = evaluate_policy(*_inputs(leak_run), policy)
    r = d.rule("game.nearest[init].auc")
    assert outcome_text(r) == "LEAK DETECTED" and r.note.startswith("leak detected")
    assert r.value <= r.limit and value_text(r).startswith("p = ")
    # the rule is underpowered at these sizes: checking power first (the earlier order) would
    # have called this detection "undecidable"
    power = float(r.note.split("with power ")[1].split(" ")[0])
    assert power < policy.power


def test_undecidable_rules_are_one_line_per_family_with_the_shadows_that_decide_them(leak_run):
    d = evaluate_policy(*_inputs(leak_run), load_policy("default"))
    fams = dict(undecidable_families(d.rules))
    init = fams["AUC over the init records"]
    assert len(init) >= 2 and all(outcome_text(r) == "undecidable" for r in init)
    line = family_line("AUC over the init records", init)
    assert line.count("\n") == 0 and "would decide them" in line
    k = int(line.split("--shadows ")[1].split(" ")[0])
    # the closed form: at kk shadows each rule's scaled fold sizes reach the power (the best
    # fold's, as the gate reads it), at kk - 2 they do not; the line names the largest kk
    audit = json.loads((leak_run / "audit/audit.json").read_text())
    shadows = audit["n_shadows"]
    needed = []
    for r in init:
        attack = r.name.split(".")[1].split("[")[0]
        counts = _fold_counts(audit["game"]["attacks"][attack]["groups"]["init"], "auc")
        alpha_f = r.limit / len(counts)
        kk = shadows_to_decide(counts, shadows, 0.85, None, alpha_f, 0.99)

        def power(at: int, counts=counts, alpha_f=alpha_f) -> float:
            scaled = [(round(i * at / shadows), round(o * at / shadows)) for i, o in counts]
            return max(stats.auc_power(i, o, 0.85, alpha_f) for i, o in scaled)

        assert power(kk) >= 0.99 > power(kk - 2) and power(shadows) < 0.99
        needed.append(kk)
    assert k == max(needed)


def test_shadows_to_decide_tpr_needs_a_resolvable_fpr():
    """TPR at 0.1 % FPR cannot be decided below 1,000 OUT guesses a fold, whatever the power."""
    k = shadows_to_decide([(360, 360)], 4, 0.12, 0.001, 0.001, 0.99)
    assert k is not None and 360 * k / 4 >= 1000
    assert stats.tpr_power(360, 360, 0.001, 0.12, 0.001) == 0.0
    assert shadows_to_decide([(360, 360)], None, 0.57, None, 0.001, 0.99) is None


@pytest.fixture(scope="module")
def overridden(tmp_path_factory):
    """A release of a clean run under a policy its sizes cannot decide, with an override."""
    tmp = tmp_path_factory.mktemp("plain")
    data = private_data()
    run = fake_run(tmp / "run", data=data)
    text = (ROOT / "rcig_release/policies/default.toml").read_bytes()
    pol = tmp / "tight.toml"
    pol.write_bytes(text.replace(b"detect_auc = 0.57", b"detect_auc = 0.52"))
    out = tmp / "bundle"
    release(run, pol, out, load_private=loader_for(data), override="reading the report")
    return out


def test_card_opens_with_the_plain_summary(overridden):
    card = (overridden / "README.md").read_text()
    body = card.split("---\n", 2)[2]
    head = body[: body.index("## Dataset details")]
    assert "## Summary" in head and "Released with an override" in head
    assert "What the custodian may claim:" in head and "What they may not claim:" in head
    assert "| what is published / trained on | test accuracy |" in head
    assert "naive release" in head and "full private training split" in head
    assert "Empirical ε lower bound" in head and "confidence, no ε-differential-privacy" in head
    assert "Not tested:" in head and "could not decide" in head
    assert "The release has two" in head  # the two accuracies explained
    # underpowered rules: one line per family, not one row per rule
    assert card.count("would decide them") == 1
    assert card.count("undecidable at these sizes") == 0
    assert verify_bundle(overridden) == []


def test_report_opens_with_the_same_summary(overridden):
    html = (overridden / "report/report.html").read_text()
    assert html.index("<h2>Summary</h2>") < html.index("<h2>Differential privacy</h2>")
    assert "What they may not claim:" in html and "would decide them" in html
    assert "p = " in html  # rule values are labelled p-values


def test_card_explains_soft_labels_folders_splits_and_citation(overridden):
    card = (overridden / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    n = sum(1 for _ in (overridden / "data/metadata.jsonl").open())
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_examples": n}]
    assert "### Soft labels" in card and "regression" in card and "unnormalised" in card
    assert "datasets.load_dataset(" in card and "mean-squared-error" in card
    assert "the rows sum to" in card
    assert "image i is distilled for class i // ipc" in card
    assert "@inproceedings{loo2023rcig" in card
    assert (
        "Loo, Noel and Hasani, Ramin and Lechner, Mathias and Amini, Alexander and Rus, Daniela"
        in card
    )
    assert "Dataset Distillation with Convexified Implicit Gradients" in card
    assert "@software{rcig_release" in card


def test_class_folder_differences_are_named():
    from rcig_release.release.documents import Summary

    labels = ((0.9, 0.0, 0.1), (0.1, 0.2, 0.7), (0.0, 0.8, 0.2), (0.1, 0.9, 0.0))
    s = Summary(
        name="t",
        license_spdx=None,
        n_images=4,
        classes=("zero", "one"),
        image_shape=(8, 8, 1),
        per_class=(1, 2),
        run_json={"config": {"ipc": 2}},
        eval_json={},
        audit={},
        decision=None,
        safety=None,
        override=None,
        content_sha256="x",
        image_labels=labels[:,] if False else tuple(row[:2] for row in labels),
    )
    text = class_assignment_md(s)
    assert "image 1 (distilled for zero, filed under one)" in text
    assert "image 0" not in text and "image 2" not in text


def test_a_policy_with_false_rules_says_they_were_not_tested():
    """The rules a policy switches off are absent from the decision (the demo bundle's card
    lists them under "Not tested": tests/test_release_demo.py)."""
    data = private_data()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run = fake_run(Path(tmp) / "run", data=data)
        d = evaluate_policy(*_inputs(run), load_policy("demo"))
    assert not any(r.name.endswith("tpr_at_fpr_0.001") for r in d.rules)
    assert not any(r.name.endswith("epsilon_lower_bound") for r in d.rules)
    full = parse_policy((ROOT / "rcig_release/policies/default.toml").read_bytes())
    assert full.overall.detect_tpr_at_fpr_0_001 is not None
