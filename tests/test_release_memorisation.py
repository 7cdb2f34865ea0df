"""The release's memorisation check: flags copies (exact, flipped, shifted, blended, noisy, one
among many) with and without init records, passes what memorises nothing at the stated rate,
ignores audit.json and cannot be overridden."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from rcig_release.cli.main import app
from rcig_release.errors import InputError
from rcig_release.release import memorisation as mem
from rcig_release.release import nearstats as ns
from rcig_release.release import safety
from rcig_release.release.bundle import ReleaseRefused, release
from rcig_release.release.inputs import load_release_inputs
from release_fixtures import FINGERPRINT, fake_run, loader_for, private_data

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "default.toml"


def _field(rng, n, side, s):
    f = ndimage.gaussian_filter(rng.standard_normal((n, side, side)), (0, s, s))
    return f / f.std(axis=(1, 2), keepdims=True)


class Synth:
    """Smooth images in a few classes (a prototype per class plus a smooth variation per image):
    a training split, a held-out split, and fresh draws (images that memorise nothing)."""

    def __init__(self, seed, n_per=200, classes=3, side=10, train_frac=0.7, border=0):
        self.rng = np.random.default_rng(seed)
        self.side = side
        self.border = border  # > 0: zero background this wide around the content (MNIST-like)
        self.protos = _field(self.rng, classes, side, 2.0)
        y = np.repeat(np.arange(classes), n_per)
        x = self.draw(y)
        perm = self.rng.permutation(len(y))
        k = int(train_frac * len(y))
        self.train, self.y = x[perm[:k]], y[perm[:k]]
        self.held = x[perm[k:]]

    def draw(self, cls):
        v = _field(self.rng, len(cls), self.side, 1.2)
        x = np.clip(0.5 + 0.18 * (self.protos[cls] + 0.8 * v), 0, 1)
        if self.border:
            b = self.border
            x[:, :b], x[:, -b:], x[:, :, :b], x[:, :, -b:] = 0, 0, 0, 0
        return x[..., None].astype(np.float32)

    def init(self, ipc):
        return np.concatenate(
            [
                self.rng.choice(np.flatnonzero(self.y == c), ipc, replace=False)
                for c in range(self.y.max() + 1)
            ]
        )


def shifted(x, dy, dx):
    """Zero-filled shift: ``out[y, x] = in[y - dy, x - dx]``."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = x[
        :, max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)
    ]
    return out


# --- the statistics ----------------------------------------------------------------------------


def brute_gap_lowpass(q, train, ref):
    """Independent loops: the transform-minimised overlap RMS distance to every record (gap) and
    the flip-minimised PCA angle (lowpass), nearest over second nearest."""
    cfg = ref.config
    h, w, _ = q.shape
    s = cfg.max_shift
    dist, sines = [], []
    for t in train:
        best, best_sin = math.inf, math.inf
        for flip in (False, True) if cfg.flips else (False,):
            img = q[:, ::-1] if flip else q
            for dy in range(-s, s + 1):
                for dx in range(-s, s + 1):
                    acc, npx = 0.0, 0
                    for yy in range(h):
                        for xx in range(w):
                            sy, sx = yy + dy, xx + dx
                            if 0 <= sy < h and 0 <= sx < w:
                                acc += float(((img[sy, sx] - t[yy, xx]) ** 2).sum())
                                npx += img.shape[2]
                    best = min(best, math.sqrt(acc / npx))
            za = ref.basis @ (img.ravel() - img.mean())
            zb = ref.basis @ (t.ravel() - t.mean())
            cos = float(za @ zb / (np.linalg.norm(za) * np.linalg.norm(zb)))
            best_sin = min(best_sin, math.sqrt(1 - max(0.0, cos) ** 2))
        dist.append(best)
        sines.append(best_sin)
    d, s_ = np.sort(dist), np.sort(sines)
    return d[0] / d[1], s_[0] / s_[1], d[0], d[1]


def test_statistics_match_brute_force():
    data = Synth(1, n_per=12, classes=2, side=6)
    cfg = ns.NearConfig(max_shift=1, pca_dims=4)
    ref = ns.prepare(data.train, data.held, cfg)
    assert ref.exhaustive and len(ref.variants) == 18
    q = mem.publish_pixels(np.concatenate([data.held[:3], data.train[:1, :, ::-1]]))
    st = ns.query_stats(ref, q)
    for k in range(len(q)):
        gap, low, d1, d2 = brute_gap_lowpass(q[k], data.train.astype(np.float64), ref)
        assert st.gap[k] == pytest.approx(gap, rel=1e-6)
        assert st.lowpass[k] == pytest.approx(low, rel=1e-5)
        assert (st.d1[k], st.d2[k]) == pytest.approx((d1, d2), rel=1e-6)
    assert st.nearest[3] == 0 and ref.describe_variant(int(st.transform[3])) == "flip, shift (0, 0)"


@pytest.mark.parametrize("budget", [1 << 23, 0])  # exhaustive, prefiltered
def test_leave_one_out_equals_the_replaced_pool(budget):
    data = Synth(2, n_per=40, classes=2, side=8)
    cfg = ns.NearConfig(exhaustive_budget=budget)
    ref = ns.prepare(data.train, data.held, cfg)
    assert ref.exhaustive == (budget > 0)
    k, c = np.array([3, 7]), np.array([5, 0])
    q = mem.publish_pixels(data.train[k])
    loo = ns.query_stats(ref, q, k, c)
    for j in range(2):  # the same query against a pool where record k[j] IS the companion
        pool = data.train.copy()
        pool[k[j]] = data.held[c[j]]
        other = ns.Reference(
            **{**ref.__dict__, "pool": ns.prepare_images(pool, ref.basis, cfg)}  # same basis
        )
        one = ns.query_stats(other, q[j : j + 1])
        for name in ("gap", "lowpass", "blend", "d1", "d2"):
            assert getattr(loo, name)[j] == pytest.approx(getattr(one, name)[0], rel=1e-6), name


@pytest.mark.parametrize("budget", [1 << 23, 0])
def test_transformed_and_blended_copies_have_extreme_statistics(budget):
    """Every record under every transform (small data), or prefilters (large data; found by the
    Fourier prefilter, which is shift-invariant for content away from the border, as in MNIST)."""
    data = Synth(3, n_per=60, classes=3, side=14, border=0 if budget else 3)
    ref = ns.prepare(data.train, data.held, ns.NearConfig(exhaustive_budget=budget))
    t = data.train[:4]
    other = data.train[10:14]
    cases = {
        "exact": t,
        "flip": t[:, :, ::-1],
        "shift": shifted(t, 1, -1),
        "shift2": shifted(t, -2, 2),
        "flip+shift": shifted(t[:, :, ::-1], 2, 0),
        "blend": 0.6 * t + 0.4 * other,
    }
    for name, x in cases.items():
        st = ns.query_stats(ref, mem.publish_pixels(x))
        if name == "blend":
            assert (st.blend < 0.05).all(), (name, st.blend)
        else:
            assert (st.d1 < 0.003).all() and (st.gap < 0.02).all(), (name, st.d1)
            assert (st.nearest == np.arange(4)).all()
    fresh = ns.query_stats(ref, mem.publish_pixels(data.held[:20]))
    assert np.median(fresh.gap) > 0.5 and np.median(fresh.blend) > 0.3


# --- calibration -------------------------------------------------------------------------------


def test_the_null_is_calibrated_and_an_uncorrected_variant_is_not():
    """Releases that memorise nothing (fresh draws of each class, with init records drawn as the
    pipeline draws them) are refused at most alpha = 5 % of the time over many data sets (the
    guarantee is over the data: one data set's null can sit high or low). The same releases
    judged image by image at the family's level, without the Bonferroni split over images (a
    broken variant), are refused far more often."""
    refused = broken = total = 0
    cfg = mem.CheckConfig(init_draws=1999)
    for seed in range(20):
        data = Synth(100 + seed, n_per=60, side=8)
        prep = mem.prepare(data.train, data.held, cfg.alphas(True)[0] / 6, cfg)
        for _ in range(8):
            init = data.init(2)
            res = mem.run_check(prep, data.draw(data.y[init]), data.train, init, data.y)
            refused += not res.passed
            broken += any(im.p_nearest <= res.alpha_nearest for im in res.images)
            total += 1
    # binomial(160, 0.05): mean 8, P(X >= 17) < 0.004
    assert total == 160 and refused <= 16, (refused, broken)
    assert broken >= 24, (refused, broken)


# --- power on every leak kind ------------------------------------------------------------------


@pytest.fixture(scope="module")
def leaky():
    data = Synth(5, n_per=150, classes=4, side=12)
    level = mem.CheckConfig().alphas(True)[0] / 8
    return data, mem.prepare(data.train, data.held, level)


LEAKS = ("exact", "flip", "shift1", "shift2", "blend", "noise", "one_in_ten")


def make_leak(data, kind, init):
    t = data.train[init]
    if kind == "exact":
        return t
    if kind == "flip":
        return t[:, :, ::-1]
    if kind == "shift1":
        return shifted(t, 1, 0)
    if kind == "shift2":
        return shifted(t, -2, 2)
    if kind == "blend":  # 0.6 x the init record + 0.4 x another record of its class
        other = [data.rng.choice(np.flatnonzero(data.y == data.y[i])) for i in init]
        return 0.6 * t + 0.4 * data.train[other]
    if kind == "noise":
        return t + 0.2 * data.rng.standard_normal(t.shape)
    out = data.draw(data.y[init])  # one copy among fresh images
    out[3] = t[3]
    return out


@pytest.mark.parametrize("kind", LEAKS)
def test_every_leak_kind_is_refused_with_and_without_init_records(leaky, kind):
    data, prep = leaky
    for with_init in (True, False):
        for _ in range(3):
            init = data.init(2)
            x = make_leak(data, kind, init)
            res = mem.run_check(prep, x, data.train, init if with_init else None, data.y)
            assert not res.passed, (kind, with_init, res.describe())
            assert res.flagged_by("nearest") >= 1
            if kind == "one_in_ten":
                assert [im.index for im in res.images if "nearest" in im.flagged_by] == [3]


def test_fresh_images_and_noise_pass(leaky):
    data, prep = leaky
    rng = np.random.default_rng(0)
    passed = 0
    for _ in range(10):
        init = data.init(2)
        passed += mem.run_check(prep, data.draw(data.y[init]), data.train, init, data.y).passed
        passed += mem.run_check(prep, rng.uniform(0, 1, (8, 12, 12, 1)), data.train).passed
    assert passed >= 19


# --- the result, its JSON, and the release -----------------------------------------------------


def test_result_round_trips_and_states_its_coverage(leaky):
    data, prep = leaky
    init = data.init(2)
    res = mem.run_check(prep, make_leak(data, "flip", init), data.train, init, data.y)
    public = res.to_json()
    back = mem.MemorisationResult.from_json(json.loads(json.dumps(public)))
    assert back.passed == res.passed is False and back.describe() == res.describe()
    assert back.coverage() == res.coverage() == public["coverage"]
    assert back.levels_consistent() and res.n_tests == 9
    assert "horizontal flip" in res.coverage() and "shifts by up to 2 pixels" in res.coverage()
    assert "within-class randomisation test" in res.coverage()
    assert "train_index" not in json.dumps(public) and "nearest_transform" not in json.dumps(public)
    private = res.to_json(include_indices=True)["images"]
    assert all("init_train_index" in im and "nearest_train_index" in im for im in private)
    # a p-value edited below the level is a failed check when re-derived
    public["images"][0]["p_nearest"] = 1.0
    assert mem.MemorisationResult.from_json(public).flagged_by("nearest") == res.flagged_by(
        "nearest"
    ) - int(res.images[0].p_nearest <= res.level)


def test_unresolvable_check_refuses():
    tiny = private_data(n=20, n_test=10)
    res = mem.memorisation_check(tiny.x_train[:6] * 0 + 0.5, tiny.x_train, tiny.x_test)
    assert not res.resolvable and not res.passed and "cannot reach its level" in res.describe()


def test_bad_init_inputs_are_refused():
    data = private_data(n=30, n_test=10)
    with pytest.raises(InputError, match="out of range"):
        mem.memorisation_check(
            data.x_train[:2],
            data.x_train,
            data.x_test,
            np.array([50, -1]),
            train_labels=data.y_train,
        )
    with pytest.raises(InputError, match="twice"):
        mem.memorisation_check(
            data.x_train[:2], data.x_train, data.x_test, np.array([4, 4]), train_labels=data.y_train
        )
    with pytest.raises(InputError, match="labels"):
        mem.memorisation_check(data.x_train[:2], data.x_train, data.x_test, np.array([4, 5]))


def test_release_ignores_audit_json_and_cannot_be_overridden(tmp_path, monkeypatch):
    data = private_data()
    leak = fake_run(tmp_path / "leak", data=data, leak=True)  # released images = training images
    load = loader_for(data)

    def refused(run, **kw):
        with pytest.raises(ReleaseRefused, match="memorisation check: 6 of 6") as e:
            release(
                run, DEFAULT, tmp_path / "out", load_private=load, override="audit says fine", **kw
            )
        assert not (tmp_path / "out").exists()
        return e.value.safety.to_json()

    before = refused(leak)
    m = before["memorisation"]
    assert m["flagged_nearest"] == 6 and m["init_test"]["rejected"] and m["flagged_init"] >= 1
    # an edited audit (a metric that used to disable the old check, a zero threshold, no near copies)
    audit_path = leak / "audit/audit.json"
    audit = json.loads(audit_path.read_text())
    cc = audit["copy_check"]
    cc.update(metric="l2_pixel", threshold=0.0, near_copies=0)
    cc.pop("per_image")
    audit_path.write_text(json.dumps(audit))
    assert refused(leak) == before

    # the CLI: exit 3, the flagged images named, no traceback, nothing written
    monkeypatch.setattr(safety, "default_loader", load)
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app,
        ["release", str(leak), "--policy", str(DEFAULT), "--out", str(out), "--override", "please"],
    )
    assert res.exit_code == 3, res.output
    assert (
        "memorisation check: 6 of 6" in " ".join(res.output.split())
        and "Traceback" not in res.output
    )
    assert not out.exists()

    # and a clean run passes whatever its audit says, with the coverage in the verdict and card
    clean = fake_run(tmp_path / "clean", data=data)
    audit_path = clean / "audit/audit.json"
    audit = json.loads(audit_path.read_text())
    audit["copy_check"].update(metric="l2_pixel", threshold=1e9)
    audit_path.write_text(json.dumps(audit))
    result = release(clean, DEFAULT, tmp_path / "b", load_private=load)
    assert result.safety.passed and result.safety.flagged == 0
    verdict = json.loads((tmp_path / "b/policy/verdict.json").read_text())
    assert verdict["safety"]["memorisation"]["coverage"] == result.safety.coverage()
    card = " ".join((tmp_path / "b/README.md").read_text().split())
    assert "What the memorisation check covers" in card and "Not covered" in card


def test_bundle_holds_no_training_indices(tmp_path):
    data = private_data()
    leak = fake_run(tmp_path / "leak", data=data, leak=True)
    inp = load_release_inputs(leak)
    res = mem.memorisation_check(
        inp.images, data.x_train, data.x_test, inp.init_indices, train_labels=data.y_train
    )
    private = res.to_json(include_indices=True)["images"]
    public = json.dumps(res.to_json())
    assert all("init_train_index" in im and "nearest_train_index" in im for im in private)
    assert "train_index" not in public and "nearest_record" not in public
    assert FINGERPRINT not in public
