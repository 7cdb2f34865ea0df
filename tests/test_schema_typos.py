"""A typo in a policy or a ``--config`` file is refused through the real CLI as one line, exit 2,
"unknown key" naming the key (and the closest known key), never silently dropped and never
reported as a "missing key" of the key it was meant to be; a value of the wrong type names the key
and the expected type. The broken variant: the same pydantic models with ``extra="ignore"`` load
a policy whose optional key was misspelt (a loosened policy) and call a misspelt required key
"missing", so the check of this file fails on them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from rcig_release import schema
from rcig_release.cli.main import app
from rcig_release.errors import InputError
from rcig_release.release.policy import PolicyFile, parse_policy

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = (ROOT / "policies" / "default.toml").read_bytes()

# (original, typo'd) lines of default.toml, and the key path the refusal must name
POLICY_TYPOS = [
    (b"min_shadows = 16", b"min_shadow = 16", "audit.min_shadow", "audit.min_shadows"),
    # an optional key: dropped silently, the policy would lose the rule without a word
    (
        b"min_accuracy = 0.30",
        b"min_accuracy = 0.30\nmin_gain_over_naiv = 0.05",
        "utility.min_gain_over_naiv",
        "utility.min_gain_over_naive",
    ),
    (
        b'patterns = ["init"]',
        b'patterns = ["init"]\ndetect_tpr_at_fpr_0_1 = 0.2',
        "limits.groups.detect_tpr_at_fpr_0_1",
        "limits.groups.detect_tpr_at_fpr_0_01",
    ),
]


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory with the files release expects (never read: the policy is refused first)."""
    run = tmp_path / "run"
    (run / "audit").mkdir(parents=True)
    for name in ("distilled.npz", "run.json", "eval.json", "audit/audit.json"):
        (run / name).write_bytes(b"{}")
    return run


def one_line_error(r) -> str:
    """The single error line of a refused command (exit 2, no traceback)."""
    assert r.exit_code == 2, r.output
    msg = r.output.strip()
    assert msg.startswith("error:") and "\n" not in msg and "Traceback" not in msg, msg
    return msg


def release_refusal(run: Path, text: bytes) -> str | None:
    """The error line of ``release RUN --policy p.toml``, or None when the policy was accepted
    (then nothing is run)."""
    try:
        parse_policy(text, "p.toml")
    except InputError:
        policy = run.parent / "p.toml"
        policy.write_bytes(text)
        return one_line_error(invoke("release", run, "--policy", policy, "--out", run.parent / "b"))
    return None


def typo_refused(message: str | None, key: str, meant: str) -> bool:
    return (
        message is not None
        and f"unknown key {key}" in message
        and f"did you mean {meant}?" in message
        and "missing key" not in message
    )


@pytest.mark.parametrize("old,new,key,meant", POLICY_TYPOS)
def test_a_typo_in_a_policy_is_an_unknown_key(run_dir, old, new, key, meant):
    assert old in DEFAULT
    message = release_refusal(run_dir, DEFAULT.replace(old, new, 1))
    assert typo_refused(message, key, meant), message
    assert message is not None and "policy p.toml: " in message
    assert not (run_dir.parent / "b").exists()


def test_a_wrong_type_in_a_policy_names_the_key_and_the_type(run_dir):
    for old, new, expected in [
        (b"min_shadows = 16", b'min_shadows = "16"', "audit.min_shadows has the wrong type: "
         "expected an integer, got a string"),
        (b"min_shadows = 16", b"min_shadows = 16.0", "expected an integer, got a number"),
        (b"detect_auc = 0.57", b"detect_auc = true", "limits.detect_auc has the wrong type: "
         "expected a number or false, got a boolean"),
        (b"allow_near_copies_in_bundle = false", b"allow_near_copies_in_bundle = 0",
         "copies.allow_near_copies_in_bundle has the wrong type: expected true or false"),
        (b"[init]", b"init = 1\n[init]", "unknown key copies.init"),
        (b"[copies]", b"[copies]\n[copies.x]", "unknown key copies.x"),
    ]:  # fmt: skip
        message = release_refusal(run_dir, DEFAULT.replace(old, new, 1))
        assert message is not None and expected in message, message


def test_the_shipped_policies_still_load_with_the_schema():
    for name in ("default", "strict", "dp", "demo"):
        text = (ROOT / "policies" / f"{name}.toml").read_bytes()
        assert parse_policy(text, f"{name}.toml").name == name


def loose_validate(model, raw, where, unknown=None):
    """The broken variant: the same models, with unknown keys ignored instead of refused."""
    try:
        return model.model_validate(raw, extra="ignore")
    except ValidationError as e:
        raise InputError(f"{where}: {schema.one_line(e, raw, model, unknown)}") from None


def test_the_typo_check_fails_on_models_that_ignore_unknown_keys(run_dir, monkeypatch):
    monkeypatch.setattr(schema, "validate", loose_validate)
    verdicts = []
    for old, new, key, meant in POLICY_TYPOS:
        message = release_refusal(run_dir, DEFAULT.replace(old, new, 1))
        verdicts.append(typo_refused(message, key, meant))
    assert verdicts == [False, False, False]
    # the misspelt required key reads "missing key", the optional ones load a loosened policy
    text = DEFAULT.replace(POLICY_TYPOS[1][0], POLICY_TYPOS[1][1], 1)
    loose = parse_policy(text, "p.toml")
    assert loose.min_gain_over_naive is None  # the rule the custodian wrote is gone
    with pytest.raises(InputError, match="missing key audit.min_shadows"):
        parse_policy(DEFAULT.replace(POLICY_TYPOS[0][0], POLICY_TYPOS[0][1], 1), "p.toml")
    # a config's typo: only make_distill_config's last check of the merged keys (kept for the
    # Python callers' overrides) still refuses it, without the key's table or the closest key
    cfg = run_dir.parent / "c.toml"
    cfg.write_text("[distill]\nreal_bacth = 64\n")
    message = distill_refusal(run_dir.parent, cfg)
    assert not typo_refused(message, "distill.real_bacth", "distill.real_batch"), message
    assert PolicyFile.model_config["extra"] == "forbid"  # the real models are untouched


# ---- distill --config ------------------------------------------------------------------------


def distill_refusal(tmp: Path, config: Path) -> str | None:
    """The error line of ``distill --config`` when its configuration is refused; None when the
    configuration was accepted (then nothing is run)."""
    from rcig_release.config import load_toml, make_distill_config

    try:
        make_distill_config("cpu", load_toml(config))
    except InputError:
        return one_line_error(invoke("distill", "--config", config, "--out", tmp / "out"))
    return None


@pytest.mark.parametrize(
    "text,key,meant",
    [
        ("[distill]\nreal_bacth = 64\n", "distill.real_bacth", "distill.real_batch"),
        ("widht = 2\n", "widht", "width"),
        ("[distill]\nwidth = 2\ndp_epsilom = 1.0\n", "distill.dp_epsilom", "distill.dp_epsilon"),
    ],
)
def test_a_typo_in_a_config_file_is_an_unknown_key(tmp_path, text, key, meant):
    config = tmp_path / "c.toml"
    config.write_text(text)
    message = distill_refusal(tmp_path, config)
    assert typo_refused(message, key, meant), message
    assert message is not None and f"config file {config}: " in message
    assert not (tmp_path / "out").exists()


def test_a_wrong_type_or_a_stray_table_in_a_config_file_is_one_line(tmp_path):
    config = tmp_path / "c.toml"
    for text, expected in [
        ('[distill]\nwidth = "2"\n', "distill.width has the wrong type: expected an integer, "
         "got a string"),
        ("tune_lr = 1\n", "tune_lr has the wrong type: expected true or false, got an integer"),
        ("softplus_temp = [1]\n", "softplus_temp has the wrong type: expected a number, got an "
         "array"),
        ("distill = 3\n", "distill must be a table"),
        ("[distill]\nwidth = 2\n[eval]\nsteps = 3\n", "unknown key eval"),
        ("ipc = 2\n[distill]\nwidth = 2\n", "unknown key ipc beside [distill]"),
    ]:  # fmt: skip
        config.write_text(text)
        message = distill_refusal(tmp_path, config)
        assert message is not None and expected in message, (text, message)


def test_config_values_of_the_right_type_are_kept_as_written(tmp_path):
    from rcig_release.config import load_toml, make_distill_config

    config = tmp_path / "c.toml"
    config.write_text("[distill]\nwidth = 2\ninner_lr = 1\nzca = false\n")  # an integer number
    cfg = make_distill_config("cpu", load_toml(config))
    assert (cfg.width, cfg.inner_lr, cfg.zca) == (2, 1, False)
