"""The bundle's game figures: report/roc.png (the membership game's ROC per attack, AUC in the
legend) and report/histograms.png (the game's IN/OUT score distributions).

The figures are checked on the matplotlib figures they are rendered from: the legend's AUC must
be the audit's game AUC as ``recompute`` recomputes it from the raw score files, the histograms'
bars the counts of the IN and OUT guesses. Each check is also run on a broken variant (the
release split's curves, flipped labels) and must fail there. No training: the game's scores are
simulated by ``release_fixtures.write_game_files`` with a planted leak.
"""

import base64
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.metrics import auc as trapezoid_auc

from rcig_release.release import figures, recompute
from release_fixtures import CLASSES, fake_run, loader_for, private_data, write_game_files


@pytest.fixture(scope="module")
def game(tmp_path_factory):
    """The scores and coins of a game whose release-direct attacks find 40 leaking members, and
    the statistics ``recompute`` recomputes from its raw files (what the gate and verify read)."""
    d = tmp_path_factory.mktemp("game")
    data = private_data()
    init = np.full(6, -1)  # a noise run: no init group
    write_game_files(d, data, init, len(CLASSES), leak_records=40, shift=3.0)
    raw = recompute.read_audit_dir(d)
    gi = recompute.inputs_from_audit_dir(
        raw, init_indices=init, n_classes=len(CLASSES), labels=(data.y_train, data.y_test)
    )
    rec = recompute.recompute(gi, init_mode="noise", parts=("game",))
    return raw.scores, raw.keep, rec


_LEGEND = re.compile(r"(?P<attack>\w+) \(AUC (?P<auc>\d\.\d{3})\)")


def check_roc(fig, rec: dict) -> None:
    """The ROC figure of the game: log-log, labelled axes, a chance line, and one legend entry per
    attack of the recomputed game, '<attack> (AUC x.xxx)' with the recomputed AUC."""
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "false-positive rate" and ax.get_ylabel() == "true-positive rate"
    _, labels = ax.get_legend_handles_labels()
    assert "chance" in labels
    shown = {m["attack"]: m["auc"] for lab in labels if (m := _LEGEND.fullmatch(lab))}
    want = {a: f"{v['groups']['all']['auc']:.3f}" for a, v in rec["game"]["attacks"].items()}
    assert shown == want, (shown, want)


def check_histograms(fig, scores: dict, keep: np.ndarray) -> None:
    """One panel per attack, axes labelled, legend members (IN) / non-members (OUT), and the bars
    exactly the histograms of the IN and OUT guesses' scores."""
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == list(scores)
    y = keep.reshape(-1)
    for ax, (name, s) in zip(panels, scores.items(), strict=True):
        assert ax.get_xlabel() == figures.SCORE_AXIS[name] and "(" in ax.get_xlabel()
        assert ax.get_ylabel() == figures.HIST_YLABEL and "records" in ax.get_ylabel()
        _, labels = ax.get_legend_handles_labels()
        assert labels == ["members (IN)", "non-members (OUT)"]
        bars_in, bars_out = ax.containers
        v = np.clip(s.reshape(-1), *np.percentile(s, [0.5, 99.5]))
        edges = np.histogram_bin_edges(v, bins=30)
        for bars, side in ((bars_in, y), (bars_out, ~y)):
            assert np.allclose([p.get_x() for p in bars], edges[:-1])
            want, _ = np.histogram(v[side], bins=edges)
            assert np.array_equal([p.get_height() for p in bars], want)


def test_roc_legend_auc_is_the_recomputed_game_auc(game):
    scores, keep, rec = game
    for name, (_, _, auc) in figures.game_curves(scores, keep).items():
        assert auc == pytest.approx(rec["game"]["attacks"][name]["groups"]["all"]["auc"], abs=1e-12)
    assert rec["game"]["attacks"]["nearest"]["groups"]["all"]["auc"] > 0.55  # the planted leak
    fig = figures.game_roc_figure(scores, keep)
    try:
        check_roc(fig, rec)
    finally:
        plt.close(fig)
    assert figures.game_roc_png(scores, keep)[:8] == b"\x89PNG\r\n\x1a\n"


def test_roc_check_fails_on_broken_variants(game):
    scores, keep, rec = game
    # labels flipped: IN read as OUT
    flipped = figures.game_roc_figure(scores, ~keep)
    # the release split's curves (RUN/audit/scores.npz, the old report/roc.png) instead of the game
    rng = np.random.default_rng(0)
    member = np.arange(40) % 2 == 0
    split = {
        "member": member,
        **{f"release__{a}": rng.standard_normal(40) + member for a in scores},
    }
    release_split, ax = plt.subplots()
    for name, (fpr, tpr) in figures._score_curves(split).items():
        ax.plot(fpr, tpr, label=figures.roc_legend(name, trapezoid_auc(fpr, tpr)))
    ax.plot([0, 1], [0, 1], label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    try:
        for broken in (flipped, release_split):
            with pytest.raises(AssertionError):
                check_roc(broken, rec)
    finally:
        plt.close(flipped)
        plt.close(release_split)


def test_histograms_are_the_games_in_and_out_scores(game):
    scores, keep, _ = game
    assert keep.sum() != (~keep).sum()  # so that flipped labels change the counts
    fig = figures.histograms_figure(scores, keep)
    flipped = figures.histograms_figure(scores, ~keep)
    try:
        check_histograms(fig, scores, keep)
        with pytest.raises(AssertionError):
            check_histograms(flipped, scores, keep)
    finally:
        plt.close(fig)
        plt.close(flipped)
    assert figures.histograms_png(scores, keep)[:8] == b"\x89PNG\r\n\x1a\n"


def test_fallback_without_game_scores_says_so_in_the_title():
    """Only without game scores: the release split's curves or the audit's operating points,
    titled as not the game."""
    member = np.arange(40) % 2 == 0
    split = {"member": member, "release__loss": np.arange(40.0)}
    points = {"attacks": {"loss": {"tpr_at_fpr": {"0.01": 0.1, "0.001": 0.02}}}}
    for audit, scores in ((points, split), (points, None)):
        fig = figures.roc_figure(audit, scores)
        try:
            title = fig.axes[0].get_title()
            assert "not the game (no game scores in the bundle)" in title, title
            assert fig.axes[0].get_legend_handles_labels()[1][0] == "loss"
        finally:
            plt.close(fig)
    assert figures.roc_png(points, None)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from pathlib import Path

    from rcig_release.release.bundle import release

    tmp = tmp_path_factory.mktemp("figbundle")
    data = private_data()
    policy = Path(__file__).resolve().parents[1] / "policies" / "default.toml"
    release(fake_run(tmp / "run", data=data), policy, tmp / "b", load_private=loader_for(data))
    return tmp / "b"


def test_bundle_holds_the_game_figures_and_verifies(bundle):
    from rcig_release.release.verify import verify_bundle

    scores, keep = recompute.load_game_scores((bundle / "report/game_scores.npz").read_bytes())
    roc = (bundle / "report/roc.png").read_bytes()
    hist = (bundle / "report/histograms.png").read_bytes()
    assert roc == figures.game_roc_png(scores, keep)
    assert hist == figures.histograms_png(scores, keep)
    manifest = (bundle / "manifest-sha256.txt").read_text()
    croissant = (bundle / "croissant.json").read_text()
    for f in ("report/roc.png", "report/histograms.png"):
        assert f"  {f}\n" in manifest and f'"contentUrl": "{f}"' in croissant
    html = (bundle / "report/report.html").read_text("utf-8")
    embedded = [base64.b64decode(u) for u in re.findall(r"base64,([A-Za-z0-9+/=]+)", html)]
    assert embedded[:2] == [roc, hist]  # the ROC, the histograms beside it
    assert "rcig-release audit --private-gallery DIR" in html and "must not be shared" in html
    card = (bundle / "README.md").read_text("utf-8")
    assert "`histograms.png`" in card and "private-gallery" not in card
    assert verify_bundle(bundle) == []
