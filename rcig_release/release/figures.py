"""Figures for the bundle's report, rendered with matplotlib (Agg) to PNG bytes.

- ``roc_png``: the log-log ROC of every attack, from ``RUN/audit/scores.npz`` when it has a
  membership vector and per-attack scores, otherwise from the operating points in audit.json.
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
from sklearn.metrics import roc_curve  # noqa: E402

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
    """Log-log ROC: full curves from scores when available, else the audit's operating points."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    floor = 1e-4
    curves = _score_curves(scores) if scores is not None else {}
    if curves:
        for name, (fpr, tpr) in curves.items():
            ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=name)
        ax.set_title("ROC of every attack (log-log)")
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
        ax.set_title("Attack operating points (log-log)")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=8, loc="lower right")
    fig.subplots_adjust(left=0.15, right=0.96, bottom=0.11, top=0.93)
    return _png(fig)


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
