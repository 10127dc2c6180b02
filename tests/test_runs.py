"""dped.runs: writes that never leave a half-written file or replace one they must not."""

import pytest


def test_atomic_write_leaves_nothing_behind_when_writing_fails(tmp_path):
    from dped.runs import atomic_write

    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")

    def crash_halfway(f):
        f.write(b"half of an image")
        raise KeyboardInterrupt  # Ctrl-C while writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash_halfway)
    assert target.read_bytes() == b"previous result"  # untouched, not half-written
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary left


def test_atomic_write_without_replace_leaves_a_file_that_appeared_meanwhile(tmp_path):
    from dped.runs import atomic_write

    target = tmp_path / "model.tflite"

    def user_writes_first(f):  # the user's file lands while ours is being written
        target.write_bytes(b"the user's model")
        f.write(b"ours")

    with pytest.raises(FileExistsError):
        atomic_write(target, user_writes_first, replace=False)
    assert target.read_bytes() == b"the user's model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]
    atomic_write(tmp_path / "new.tflite", b"ours", replace=False)
    assert (tmp_path / "new.tflite").read_bytes() == b"ours"
