"""`verify` against a forger who reseals: edits a file, then recomputes croissant.json and the manifest.

Each case edits a bundle the way issue #15 describes and recomputes every checksum; verify must still
name the problem. Then signatures: a signed bundle verifies with its key, not with another key, and
not after resealing. No training: synthetic runs from ``tests/release_fixtures.py``.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import resealing
from rcig_release.cli.main import app
from rcig_release.errors import InputError
from rcig_release.release.bundle import release
from rcig_release.release.hashing import bytes_sha256
from rcig_release.release.verify import verify_bundle
from release_fixtures import FINGERPRINT, fake_run, loader_for, private_data

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "default.toml"
SIG = "manifest-sha256.txt.sig"
CHECKSUM_LINES = ("changed:", "extra:")
needs_ssh = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed"
)


def reseal(bundle: Path) -> None:
    """What a careful forger does after an edit: list every file again in croissant.json and the manifest."""
    resealing.reseal(bundle)  # in the writer's format: verify rebuilds croissant.json


def edit_json(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def keypair(tmp: Path, name: str) -> Path:
    key = tmp / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
    )
    return key


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A passing bundle (signed when ssh-keygen exists) and an overridden one (failed policy)."""
    tmp = tmp_path_factory.mktemp("tamper")
    data = private_data()
    key = keypair(tmp, "custodian") if shutil.which("ssh-keygen") else None
    release(
        fake_run(tmp / "run", data=data),
        DEFAULT,
        tmp / "pass",
        load_private=loader_for(data),
        sign=key,
    )
    other = private_data(seed=9)  # the safety check sees data the leak does not copy
    other.fingerprint = FINGERPRINT
    release(
        fake_run(tmp / "leak", data=data, leak=True),
        DEFAULT,
        tmp / "overridden",
        load_private=loader_for(other),
        override="internal test",
    )
    return {"pass": tmp / "pass", "overridden": tmp / "overridden", "key": key, "tmp": tmp}


@pytest.fixture
def bundle(made, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(made["pass"], copy)
    return copy


@pytest.fixture
def overridden(made, tmp_path):
    copy = tmp_path / "o"
    shutil.copytree(made["overridden"], copy)
    return copy


def test_pristine_bundles_are_intact(made):
    assert verify_bundle(made["pass"]) == []
    assert verify_bundle(made["overridden"]) == []
    assert (made["pass"] / "policy/policy.toml").read_bytes() == DEFAULT.read_bytes()
    verdict = json.loads((made["pass"] / "policy/verdict.json").read_text())
    assert verdict["policy"]["sha256"] == bytes_sha256(DEFAULT.read_bytes())


def test_resealed_audit_edit_fails(bundle):
    def worse(a):
        a["game"]["attacks"]["loss"]["groups"]["all"]["p_value"]["auc"] = 1e-9

    edit_json(bundle / "report/audit.json", worse)
    reseal(bundle)
    problems = verify_bundle(bundle)
    assert not any(p.startswith(CHECKSUM_LINES) for p in problems), problems
    # the statistic is recomputed from the bundled score files: the edit is named, and the verdict
    # (recomputed from the score files, not from the edited number) still holds
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "report/audit.json: game.attacks.loss.groups.all.p_value.auc is 1e-09, recomputed from "
        "report/game_scores.npz and report/game_records.json: 0.1"
    ), problems


def test_resealed_audit_edit_within_limits_still_fails(bundle):
    # every rule still passes; only the stated value moves: the verdict's value and the card's number
    edit_json(
        bundle / "report/audit.json",
        lambda a: a["attacks"]["rmia"].update(auc=0.505, auc_ci=[0.48, 0.53]),
    )
    reseal(bundle)
    problems = verify_bundle(bundle)
    assert len(problems) == 2, problems
    assert problems[0].startswith("README.md: line ") and "| rmia | 0.510 |" in problems[0]
    assert (
        problems[1].startswith("report/report.html: line ")
        and "<td>rmia</td><td>0.510</td>" in problems[1]
    )


def test_forged_verdict_fails(overridden):
    def forge(v):
        for r in v["rules"]:
            r["passed"] = True
        v["failed"], v["verdict"], v["override"] = [], "pass", None

    edit_json(overridden / "policy/verdict.json", forge)
    reseal(overridden)
    problems = verify_bundle(overridden)
    assert not any(p.startswith(CHECKSUM_LINES) for p in problems), problems
    assert (
        "policy/verdict.json: rule game.nearest[init].auc: passed is true, recomputed false"
        in problems
    )
    assert (
        "policy/verdict.json: rule game.nearest[all].tpr_at_fpr_0.001: passed is true, recomputed false"
        in problems
    )
    assert any(
        p.startswith("policy/verdict.json: failed lists 0 rule(s), recomputed ") for p in problems
    )
    assert "policy/verdict.json: verdict is \"pass\", recomputed 'fail'" in problems
    assert any("no override is recorded; no bundle should exist" in p for p in problems)


def test_forged_verdict_and_card_still_fail(overridden):
    """Rewriting the verdict, the card and the report consistently still contradicts audit + policy."""
    edit_json(
        overridden / "policy/verdict.json",
        lambda v: v.update(
            failed=[],
            verdict="pass",
            override=None,
            rules=[dict(r, passed=True) for r in v["rules"]],
        ),
    )
    card = (overridden / "README.md").read_text()
    (overridden / "README.md").write_text(
        card.replace("verdict **overridden**", "verdict **pass**")
    )
    reseal(overridden)
    problems = verify_bundle(overridden)
    assert any(p.startswith("policy/verdict.json: rule ") for p in problems)
    assert any(p.startswith("README.md: line ") for p in problems)


def test_removed_override_or_reason_fails(overridden):
    edit_json(overridden / "policy/verdict.json", lambda v: v.update(override={"reason": "  "}))
    reseal(overridden)
    problems = verify_bundle(overridden)
    assert "policy/verdict.json: override is recorded without a reason" in problems
    assert "policy/verdict.json: verdict is \"overridden\", recomputed 'fail'" in problems


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda v: v.update(rules=v["rules"] + v["rules"][:1]),
            "policy/verdict.json: rules names a rule more than once",
        ),
        (
            lambda v: v.update(rules=v["rules"][::-1]),
            "policy/verdict.json: rules are not in the order the policy evaluates them",
        ),
        (
            lambda v: v.update(rules=v["rules"][1:]),
            "policy/verdict.json: rule audit.attack_ran.loss is missing "
            "(the bundled policy applied to the audit has it)",
        ),
        (
            lambda v: v["rules"].append(dict(v["rules"][0], name="game.extra[all].auc")),
            "policy/verdict.json: rule game.extra[all].auc is not a rule of the bundled policy applied to the audit",
        ),
    ],
)
def test_verdict_rule_list_edits_fail(bundle, edit, expected):
    edit_json(bundle / "policy/verdict.json", edit)
    reseal(bundle)
    assert expected in verify_bundle(bundle)


def test_loosened_policy_fails(overridden):
    toml = (overridden / "policy/policy.toml").read_text()
    (overridden / "policy/policy.toml").write_text(
        toml.replace('patterns = ["init"]', 'patterns = ["none"]')
    )
    reseal(overridden)
    problems = verify_bundle(overridden)
    assert (
        "policy/policy.toml: sha256 differs from the policy sha256 policy/verdict.json records"
        in problems
    )
    assert (
        "policy/policy.toml: sha256 differs from the policy sha256 provenance.json records"
        in problems
    )
    assert (
        "policy/verdict.json: rule game.nearest[init].auc is missing (the bundled policy applied to the audit has it)"
        not in problems
    )  # the recomputation uses the bundled (loosened) policy: no init-group rules
    assert (
        "policy/verdict.json: rule game.nearest[init].auc is not a rule of the bundled policy applied to the audit"
        in problems
    )


def test_forged_evaluation_fails(bundle):
    # the accuracy the utility rule reads is in provenance.json: editing it changes the recomputed rule
    edit_json(bundle / "provenance.json", lambda p: p["evaluation"].update(accuracy_mean=0.1))
    reseal(bundle)
    problems = verify_bundle(bundle)
    assert (
        "policy/verdict.json: rule utility.accuracy: passed is true, recomputed false" in problems
    )


def test_forged_safety_fails(bundle):
    def forge(v):  # an image whose recorded p-value is below the level, yet "passed"
        v["safety"]["memorisation"]["images"][0]["p_nearest"] = 1e-9

    edit_json(bundle / "policy/verdict.json", forge)
    reseal(bundle)
    problems = verify_bundle(bundle)
    assert "policy/verdict.json: safety.passed does not follow from its p-values" in problems


def _move(src: str, dst: str):
    def do(b: Path):
        (b / dst).parent.mkdir(parents=True, exist_ok=True)
        (b / src).rename(b / dst)

    return do


def _copy(src: str, dst: str):
    return lambda b: shutil.copyfile(b / src, b / dst)


def _labels_row(n: int, col: int, value: str):
    def do(b: Path):
        lines = (b / "data/labels.csv").read_text().splitlines()
        cells = lines[n].split(",")
        cells[col] = value
        lines[n] = ",".join(cells)
        (b / "data/labels.csv").write_text("\n".join(lines) + "\n")

    return do


@pytest.mark.parametrize(
    "tamper, expected",
    [
        (
            _move("data/images/zero/0.png", "data/images/one/0.png"),
            [
                "data/images/one/0.png: not where the release files image 0 (expected data/images/zero/0.png)",
                "missing: data/images/zero/0.png (image 0 of data/distilled.npz)",
            ],
        ),
        (
            _move("data/images/zero", "data/images/nil"),
            [
                "data/images/nil/0.png: not where the release files image 0 (expected data/images/zero/0.png)",
                "data/images/nil/1.png: not where the release files image 1 (expected data/images/zero/1.png)",
                "missing: data/images/zero/0.png (image 0 of data/distilled.npz)",
                "missing: data/images/zero/1.png (image 1 of data/distilled.npz)",
            ],
        ),
        (
            _copy("data/images/zero/0.png", "data/images/zero/00.png"),
            [
                "data/images/zero/00.png: not where the release files image 0 (expected data/images/zero/0.png)"
            ],
        ),
        (
            lambda b: (b / "data/images/one/2.png").unlink(),
            ["missing: data/images/one/2.png (image 2 of data/distilled.npz)"],
        ),
        (
            _copy("data/images/one/3.png", "data/images/one/2.png"),
            ["data/images/one/2.png: pixels differ from data/distilled.npz"],
        ),
        (
            _copy("data/images/zero/0.png", "data/images/zero/9.png"),
            ["data/images/zero/9.png: not an image of the release"],
        ),
        (
            _labels_row(1, 2, "one"),
            ["data/labels.csv: row 1: class 'one' is not 'zero' (its label's highest class)"],
        ),
        (
            _labels_row(3, 1, "data/images/zero/2.png"),
            ["data/labels.csv: row 3: file 'data/images/zero/2.png' is not data/images/one/2.png"],
        ),
        (_labels_row(2, 0, "7"), ["data/labels.csv: row 2: index '7' is not 1"]),
        (
            _labels_row(2, 4, "0.30000001"),
            ["data/labels.csv: row 2: soft labels of image 1 differ from data/distilled.npz"],
        ),
        (
            lambda b: (b / "data/labels.csv").write_text(
                "\n".join((b / "data/labels.csv").read_text().splitlines()[:-1]) + "\n"
            ),
            ["data/labels.csv: 5 rows for 6 images in data/distilled.npz"],
        ),
    ],
)
def test_resealed_data_layout_edit_is_named(bundle, tamper, expected):
    tamper(bundle)
    reseal(bundle)
    assert verify_bundle(bundle) == expected


def _forged_histograms(b: Path) -> None:
    """A plausible forgery: the game's histograms redrawn with the coins flipped (IN as OUT)."""
    from rcig_release.release import figures, recompute

    scores, keep = recompute.load_game_scores((b / "report/game_scores.npz").read_bytes())
    (b / "report/histograms.png").write_bytes(figures.histograms_png(scores, ~keep))


@pytest.mark.parametrize(
    "tamper, expected",
    [
        (lambda b: (b / "report/histograms.png").unlink(), "missing: report/histograms.png"),
        (
            _forged_histograms,
            "report/report.html: the score histograms are not report/histograms.png",
        ),
    ],
)
def test_resealed_histograms_removed_or_edited_fail(bundle, tamper, expected):
    """report/histograms.png is in the bundle's layout (required) and the report embeds it byte
    for byte: removing it or drawing another one, then resealing, fails verify (exit 1)."""
    assert verify_bundle(bundle) == []
    tamper(bundle)
    reseal(bundle)
    assert expected in verify_bundle(bundle)
    res = CliRunner().invoke(app, ["verify", str(bundle)])
    assert res.exit_code == 1 and "report/histograms.png" in res.output


def test_unresealed_histograms_edit_is_a_changed_file(bundle):
    _forged_histograms(bundle)
    problems = verify_bundle(bundle)
    assert "changed: report/histograms.png (sha256 differs from manifest-sha256.txt)" in problems


@needs_ssh
def test_signed_bundle_verifies_with_its_key_only(made, bundle):
    key = made["key"]
    assert (bundle / SIG).read_bytes().startswith(b"-----BEGIN SSH SIGNATURE-----")
    assert verify_bundle(bundle, key=f"{key}.pub") == []
    other = (
        keypair(made["tmp"], "someone-else")
        if not (made["tmp"] / "someone-else").exists()
        else made["tmp"] / "someone-else"
    )
    problems = verify_bundle(bundle, key=f"{other}.pub")
    assert len(problems) == 1 and problems[0].startswith(
        f"{SIG}: does not verify with someone-else.pub"
    ), problems
    # an OpenSSH allowed-signers file works as well
    allowed = made["tmp"] / "allowed_signers"
    allowed.write_text(
        "custodian@example " + " ".join((Path(f"{key}.pub")).read_text().split()[:2]) + "\n"
    )
    assert verify_bundle(bundle, key=allowed) == []


@needs_ssh
def _backdate(bundle: Path) -> None:
    """An edit nothing in the bundle can contradict (the creation time), then a reseal."""
    edit_json(bundle / "provenance.json", lambda p: p.update(created="2020-01-01T00:00:00+00:00"))
    reseal(bundle)


def test_signed_bundle_fails_after_resealing(made, bundle):
    _backdate(bundle)
    assert verify_bundle(bundle) == []  # internally consistent: an unsigned check cannot tell
    problems = verify_bundle(bundle, key=f"{made['key']}.pub")
    assert len(problems) == 1 and problems[0].startswith(f"{SIG}: does not verify"), problems


def documented_commands() -> str:
    """The bash block of docs/release.md's "Signatures" section, as a reader would paste it."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "release.md").read_text()
    section = text[text.index("### Signatures") :]
    return section[
        section.index("```bash\n") + 8 : section.index("\n```", section.index("```bash"))
    ]


@needs_ssh
@pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="no bash/coreutils"
)
def test_the_documented_commands_check_a_bundle(made, tmp_path):
    """docs/release.md: a reader without rcig-release checks the signature, the checksums, the file list."""
    shutil.copyfile(f"{made['key']}.pub", tmp_path / "custodian.pub")
    shutil.copytree(made["pass"], tmp_path / "BUNDLE")
    script = "set -e -o pipefail\n" + documented_commands()
    ok = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert 'Good "rcig-release-bundle" signature for custodian' in ok.stdout + ok.stderr
    for tamper in (
        lambda b: (b / "notes.txt").write_text("x"),  # an unlisted file
        _backdate,  # a resealed manifest
    ):
        shutil.rmtree(tmp_path / "BUNDLE")
        shutil.copytree(made["pass"], tmp_path / "BUNDLE")
        tamper(tmp_path / "BUNDLE")
        bad = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
        assert bad.returncode != 0, bad.stdout + bad.stderr


@needs_ssh
def test_key_on_unsigned_bundle_fails(made, overridden):
    problems = verify_bundle(overridden, key=f"{made['key']}.pub")
    assert problems == [f"missing: {SIG} (the bundle is unsigned; --key needs a signed bundle)"]
    res = CliRunner().invoke(app, ["verify", str(overridden), "--key", f"{made['key']}.pub"])
    assert res.exit_code == 1 and "unsigned" in res.output


@needs_ssh
def test_verify_cli_says_what_was_checked(made, overridden):
    runner = CliRunner()
    res = runner.invoke(app, ["verify", str(overridden)])
    assert res.exit_code == 0 and "unsigned" in res.output and "anyone can" in res.output
    res = runner.invoke(app, ["verify", str(made["pass"])])
    assert res.exit_code == 0 and "signature present but not checked" in res.output
    res = runner.invoke(app, ["verify", str(made["pass"]), "--key", f"{made['key']}.pub"])
    assert res.exit_code == 0 and "signature valid" in res.output


def test_missing_ssh_keygen_or_key_is_exit_2(made, tmp_path, monkeypatch):
    runner = CliRunner()
    data = private_data()
    run = fake_run(tmp_path / "run", data=data)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for args in (
        ["verify", str(made["overridden"]), "--key", str(tmp_path / "k.pub")],
        [
            "release",
            str(run),
            "--policy",
            str(DEFAULT),
            "--out",
            str(tmp_path / "b"),
            "--sign",
            str(tmp_path / "k"),
        ],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "ssh-keygen not found on PATH" in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


@needs_ssh
def test_unreadable_key_is_exit_2(made, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        app, ["verify", str(made["overridden"]), "--key", str(tmp_path / "nope.pub")]
    )
    assert res.exit_code == 2 and "public key not readable: nope.pub" in res.output
    with pytest.raises(InputError, match="signing key not readable: nope"):
        release(
            fake_run(tmp_path / "run", data=private_data()),
            DEFAULT,
            tmp_path / "b",
            sign=tmp_path / "nope",
        )
    assert not (tmp_path / "b").exists()
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    data = private_data()
    with pytest.raises(InputError, match="ssh-keygen could not sign with junk"):
        release(tmp_path / "run", DEFAULT, tmp_path / "b", sign=junk, load_private=loader_for(data))
    assert not (tmp_path / "b").exists()


def test_garbage_in_the_statements_is_a_problem_not_a_crash(bundle):
    edit_json(
        bundle / "policy/verdict.json",
        lambda v: v.update(rules="all fine", safety=[1], override="yes"),
    )
    edit_json(
        bundle / "report/audit.json", lambda a: a["copy_check"].update(per_image=[{"x": "y"}, 3])
    )
    edit_json(bundle / "provenance.json", lambda p: p.update(evaluation=[0.9], release={"name": 3}))
    reseal(bundle)
    problems = verify_bundle(bundle)
    assert "policy/verdict.json: rules is not a list of rules" in problems
    assert "policy/verdict.json: safety is missing or malformed" in problems
    assert "policy/verdict.json: override is recorded without a reason" in problems


@needs_ssh
def test_cli_release_sign(made, tmp_path, monkeypatch):
    from rcig_release.release import safety

    data = private_data()
    monkeypatch.setattr(safety, "default_loader", loader_for(data))
    run, out = fake_run(tmp_path / "run", data=data), tmp_path / "b"
    res = CliRunner().invoke(
        app,
        [
            "release",
            str(run),
            "--policy",
            str(DEFAULT),
            "--out",
            str(out),
            "--sign",
            str(made["key"]),
        ],
    )
    assert res.exit_code == 0 and "bundle written (signed)" in res.output, res.output
    assert verify_bundle(out, key=f"{made['key']}.pub") == []
