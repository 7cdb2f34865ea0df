"""Figures for the bundle's report, rendered with matplotlib (Agg) to PNG bytes.

- ``game_roc_png``: the log-log ROC of the **membership game** per attack (every guess of
  ``report/game_scores.npz``: the scores ``[K, N]`` against the coins ``keep``), the legend giving
  each attack's AUC (``game_curves``: sklearn's ``roc_curve`` and ``roc_auc_score`` on the same
  flattened guesses as ``game.group_statistics``, so it is the audit's ``game.attacks.<a>.groups.
  all.auc`` exactly).
- ``histograms_png``: per attack, the game's member (IN) and non-member (OUT) score distributions.
- ``roc_png``: the fallback when there are no game scores: the ROC of the release split's scores
  (``RUN/audit/scores.npz``) or the audit's operating points, its title saying it is not the game.
- ``grid_png``: the released images, one row per class (a Pillow mosaic; fast), each row labelled
  with the class id and name in DejaVu Sans (shipped with matplotlib); characters it lacks (CJK,
  emoji) are written as code points rather than drawn as boxes.
- ``copy_check_png``: the released images' distances to their nearest private training and
  held-out records, with the near-copy threshold.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

_MEMBER_KEYS = ("member", "members", "membership", "is_member", "labels")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # tight bounding box: no axis label or title is clipped, whatever its length
    fig.savefig(
        buf,
        format="png",
        dpi=100,
        metadata={"Software": None},
        bbox_inches="tight",
        pad_inches=0.15,
    )
    plt.close(fig)
    return buf.getvalue()


def _score_curves(scores: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    member_key = next((k for k in _MEMBER_KEYS if k in scores), None)
    if member_key is None:
        return {}
    member = np.asarray(scores[member_key]).astype(bool).reshape(-1)
    if member.all() or not member.any():
        return {}
    curves = {}
    keys = sorted(scores)
    if any(
        "__" in k for k in keys
    ):  # audit runner layout: "<pipeline>__<attack>"; plot the release
        keys = [k for k in keys if k.startswith("release__")]
    for key in keys:
        if key == member_key or key.startswith("record_"):
            continue
        s = np.asarray(scores[key])
        if not np.issubdtype(s.dtype, np.number) or s.ndim < 1 or s.shape[-1] != member.size:
            continue
        s = s.reshape(-1, member.size).mean(0).astype(np.float64)
        if not np.isfinite(s).all():
            continue
        fpr, tpr, _ = roc_curve(member, s)
        curves[key.removeprefix("release__").removeprefix("scores_").removeprefix("score_")] = (
            fpr,
            tpr,
        )
    return curves


def roc_png(audit: Mapping, scores: Mapping[str, np.ndarray] | None) -> bytes:
    """The fallback without game scores (log-log): full curves of the release split's scores when
    available, else the audit's operating points; the title says it is not the membership game."""
    return _png(roc_figure(audit, scores))


def roc_figure(audit: Mapping, scores: Mapping[str, np.ndarray] | None):
    """The matplotlib figure ``roc_png`` renders."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    floor = 1e-4
    curves = _score_curves(scores) if scores is not None else {}
    if curves:
        for name, (fpr, tpr) in curves.items():
            ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=name)
        ax.set_title(f"ROC of the release split, not the game ({NO_GAME})", fontsize=9)
    else:
        for name, m in sorted((audit.get("attacks") or {}).items()):
            pts = [
                (float(f), float(t))
                for f, t in (m.get("tpr_at_fpr") or {}).items()
                if isinstance(t, (int, float)) and not isinstance(t, bool)
            ]
            if pts:
                pts.sort()
                ax.plot([p[0] for p in pts], [max(p[1], floor) for p in pts], "o-", label=name)
        ax.set_title(f"Attack operating points, not the game ({NO_GAME})", fontsize=9)
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=8, loc="lower right")
    fig.subplots_adjust(left=0.15, right=0.96, bottom=0.11, top=0.93)
    return fig


NO_GAME = "no game scores in the bundle"

# What each attack's score is, and its unit (audits/attacks.py; higher = more likely a member).
SCORE_AXIS = {
    "loss": "score: −cross-entropy loss (nats)",
    "shadow": "score: shadow model's P(member) (probability)",
    "lira_online": "score: LiRA log-likelihood ratio (nats)",
    "lira_offline": "score: LiRA offline z (OUT standard deviations)",
    "rmia": "score: RMIA fraction of population dominated (fraction)",
    "nearest": "score: −distance to nearest released image (normalised pixel L2)",
    "nearest_feature": "score: −distance to nearest released image (normalised feature L2)",
}
MEMBERS, NONMEMBERS = "members (IN)", "non-members (OUT)"
HIST_YLABEL = "records (counted once per shadow pipeline)"


def roc_legend(attack: str, auc: float) -> str:
    """The legend entry of one attack's game ROC."""
    return f"{attack} (AUC {auc:.3f})"


def game_curves(
    scores: Mapping[str, np.ndarray], keep: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """(fpr, tpr, AUC) of the membership game per attack: every (shadow, record) guess of the
    scores ``[K, N]``, labelled by its coin ``keep [K, N]`` (True: IN). The same flattened guesses
    ``game.group_statistics`` scores for the group ``all``, with sklearn's ``roc_auc_score`` as
    ``metrics.auc_with_ci`` uses, so the AUC is the audit's ``groups.all.auc``."""
    y = np.asarray(keep, bool).reshape(-1)
    out = {}
    for name in scores:
        s = np.asarray(scores[name], np.float64).reshape(-1)
        fpr, tpr, _ = roc_curve(y, s)
        out[name] = (fpr, tpr, float(roc_auc_score(y, s)))
    return out


def game_roc_figure(scores: Mapping[str, np.ndarray], keep: np.ndarray):
    """The matplotlib figure ``game_roc_png`` renders (tests read its legend)."""
    y = np.asarray(keep, bool)
    floor = 1.0 / max(2, int((~y).sum()))  # the smallest FPR the OUT guesses resolve
    lo = floor / 2
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (fpr, tpr, auc) in game_curves(scores, keep).items():
        ax.plot(np.maximum(fpr, lo), np.maximum(tpr, lo), label=roc_legend(name, auc))
    ax.plot([lo, 1], [lo, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    K, N = y.shape
    ax.set_title(
        f"Membership game ROC (log-log): {K} shadows × {N} records,\n"
        f"{int(y.sum())} IN and {int((~y).sum())} OUT guesses",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    return fig


def game_roc_png(scores: Mapping[str, np.ndarray], keep: np.ndarray) -> bytes:
    """The game's log-log ROC per attack, AUC in the legend, chance line (report/roc.png)."""
    return _png(game_roc_figure(scores, keep))


def histograms_figure(scores: Mapping[str, np.ndarray], keep: np.ndarray):
    """The matplotlib figure ``histograms_png`` renders: one panel per attack, the game's IN and
    OUT guesses' scores on shared bins (tails past the 0.5th/99.5th percentiles clipped into the
    end bins, so one outlier does not flatten the rest)."""
    y = np.asarray(keep, bool).reshape(-1)
    names = list(scores)
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.reshape(-1)[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.reshape(-1), names, strict=False):
        s = np.asarray(scores[name], np.float64).reshape(-1)
        s = np.clip(s, *np.percentile(s, [0.5, 99.5]))
        bins = np.histogram_bin_edges(s, bins=30)
        ax.hist(s[y], bins=bins, alpha=0.6, color="tab:red", label=MEMBERS)
        ax.hist(s[~y], bins=bins, alpha=0.6, color="tab:blue", label=NONMEMBERS)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(SCORE_AXIS.get(name, f"score of {name}"), fontsize=7)
        ax.set_ylabel(HIST_YLABEL, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(
        "Membership game: score distributions per attack (higher = more likely a member)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def histograms_png(scores: Mapping[str, np.ndarray], keep: np.ndarray) -> bytes:
    """Per attack, the game's member vs non-member score histograms (report/histograms.png)."""
    return _png(histograms_figure(scores, keep))


@functools.lru_cache(maxsize=1)
def _label_font():
    """DejaVu Sans from matplotlib's own data (no system font needed) and the code points it draws."""
    from fontTools.ttLib import TTFont
    from PIL import ImageFont

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    with TTFont(str(path), lazy=True) as tt:
        covered = frozenset(tt.getBestCmap())
    return ImageFont.truetype(str(path), 11), covered


def drawable_name(name: str, covered: frozenset[int]) -> str:
    """``name`` with every character the font cannot draw written as ``\\uXXXX`` (or ``\\UXXXXXXXX``),
    so a CJK or emoji class name is shown as its code points instead of as boxes."""
    out = []
    for ch in name:
        cp = ord(ch)
        if cp in covered and ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}")
    return "".join(out)


def label_lines(text: str, width: float, measure, max_lines: int) -> list[str]:
    """``text`` broken into lines of at most ``width`` (by ``measure``), at most ``max_lines``; when
    it does not fit, the last line ends in an ellipsis (the row's id prefix keeps rows distinct)."""
    lines, cur = [], ""
    for ch in text:
        if cur and measure(cur + ch) > width:
            lines.append(cur)
            cur = ""
        cur += ch
    if cur:
        lines.append(cur)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and measure(last + "…") > width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last + "…"]
    return lines


def grid_png(
    images: np.ndarray,
    classes: Sequence[str],
    image_class: np.ndarray,
    *,
    cell: int = 56,
    max_cols: int = 20,
) -> bytes:
    """The released images, one row per class (at most ``max_cols``), as a PIL mosaic. Each row is
    labelled ``<class id>: <name>``, wrapped (ellipsised past 4 lines), undrawable characters as
    code points; the report's class table has every full name."""
    from PIL import Image, ImageDraw

    font, covered = _label_font()
    n_cols = max(1, min(max_cols, max(int((image_class == c).sum()) for c in range(len(classes)))))
    label_w, pad, line_h = 150, 4, 13
    width = label_w + n_cols * (cell + pad) + pad
    height = len(classes) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(classes):
        y = pad + r * (cell + pad)
        lines = label_lines(
            f"{r}: {drawable_name(str(name), covered)}",
            label_w - 2 * pad,
            font.getlength,
            max_lines=cell // line_h,
        )
        top = y + (cell - len(lines) * line_h) // 2
        for k, line in enumerate(lines):
            draw.text((pad, top + k * line_h), line, fill="black", font=font)
        for c, i in enumerate(np.flatnonzero(image_class == r)[:n_cols]):
            px = np.round(np.clip(images[i], 0, 1) * 255).astype(np.uint8)
            tile = Image.fromarray(px[..., 0] if px.shape[-1] == 1 else px).convert("RGB")
            canvas.paste(
                tile.resize((cell, cell), Image.Resampling.NEAREST), (label_w + c * (cell + pad), y)
            )
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def copy_check_png(copy_check: Mapping) -> bytes | None:
    """Nearest-train vs nearest-held-out distance per released image, with the threshold."""
    from rcig_release.release.auditview import copy_rows

    ok = [
        (r["nearest_train"], r["nearest_test"])
        for r in copy_rows(copy_check)
        if r["nearest_train"] is not None and r["nearest_test"] is not None
    ]
    if not ok:
        return None
    a, b = np.array(ok, dtype=np.float64).T
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(b, a, s=14)
    hi = float(max(a.max(), b.max(), copy_check.get("threshold") or 0) * 1.05) or 1.0
    ax.plot([0, hi], [0, hi], "k--", lw=0.8, label="equal distance")
    thr = copy_check.get("threshold")
    if isinstance(thr, (int, float)):
        ax.axhline(thr, color="red", lw=1, label="near-copy threshold")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("distance to nearest held-out record")
    ax.set_ylabel("distance to nearest private training record")
    ax.set_title("Copy check, one point per released image")
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.14, right=0.96, bottom=0.13, top=0.92)
    return _png(fig)
