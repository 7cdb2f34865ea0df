"""Checkpoints: a kill between writing the state and writing the meta leaves the previous pair."""

import numpy as np
import pytest

from rcig_release import checkpoint
from rcig_release.errors import InputError


def test_kill_between_state_and_meta_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, {"w": np.zeros(3, np.float32)}, {"step": 1})
    real = checkpoint.atomic_write_text

    def killed(path, text):  # the process dies right after the new state file is in place
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, {"w": np.ones(3, np.float32)}, {"step": 2})
    monkeypatch.setattr(checkpoint, "atomic_write_text", real)
    state, meta = checkpoint.load(tmp_path, {"w": np.zeros(3, np.float32)})
    assert meta["step"] == 1 and np.array_equal(state["w"], np.zeros(3))
    # the next complete save replaces the pair and removes every stale state file
    checkpoint.save(tmp_path, {"w": np.full(3, 2.0, np.float32)}, {"step": 3})
    state, meta = checkpoint.load(tmp_path, {"w": np.zeros(3, np.float32)})
    assert meta["step"] == 3 and np.array_equal(state["w"], np.full(3, 2.0))
    assert len(list(tmp_path.glob("state-*.msgpack"))) == 1


def test_missing_or_altered_state_file_is_one_clear_error(tmp_path):
    checkpoint.save(tmp_path, {"w": np.zeros(3, np.float32)}, {"step": 1})
    (state_file,) = tmp_path.glob("state-*.msgpack")
    data = bytearray(state_file.read_bytes())
    data[-1] ^= 0xFF
    state_file.write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match"):
        checkpoint.load(tmp_path, {"w": np.zeros(3, np.float32)})
    state_file.unlink()
    with pytest.raises(InputError, match="missing"):
        checkpoint.load(tmp_path, {"w": np.zeros(3, np.float32)})
