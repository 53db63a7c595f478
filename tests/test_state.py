"""Tests for imaged.daemon.store: records and digest cache on disk, atomic writes, the lock."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imaged.daemon.store import ImageRecord, StateStore
from imaged.digest.cache import DigestCache
from imaged.errors import ImagedError

RECORDS = {
    "api": ImageRecord(
        name="api",
        uri="127.0.0.1:5000/api:3f2a",
        tag="3f2a",
        manifest_digest="sha256:" + "ab" * 32,
        pushed_at=1700000000.5,
        layers=[{"index": 0, "kind": "pip_packages", "digest": "d1", "files": {}}],
        file_digests={"source_folder src": {"src/app.py": "e3b0", "src/util.py": "c0ff"}},
    ),
    "worker": ImageRecord(name="worker"),
}


def test_records_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.load() == {}
    store.save(RECORDS)
    assert StateStore(tmp_path / "state").load() == RECORDS
    assert json.loads((tmp_path / "state/state.json").read_text())["version"] == 1


def test_cache_round_trips(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.load_cache().entries == {}
    cache = DigestCache(entries={"/src/a.py": ((1, 2, 3, 4, 5, 6), 99, "abc")})
    store.save_cache(cache)
    assert store.load_cache().entries == cache.entries


def test_a_crash_during_save_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    store.save({"api": RECORDS["api"]})
    before = (tmp_path / "state.json").read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(ImagedError, match="No space left"):
        store.save(RECORDS)
    monkeypatch.undo()
    assert (tmp_path / "state.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert store.load() == {"api": RECORDS["api"]}


CORRUPT = [
    pytest.param("state.json", '{"version": 1, "images": {"api": ', id="truncated"),
    pytest.param("state.json", "[1, 2]", id="not-an-object"),
    pytest.param("state.json", '{"version": 1, "images": {"api": {"uri": "x"}}}', id="no-name"),
    pytest.param("state.json", '{"version": 1, "images": {"api": [1]}}', id="record-list"),
    pytest.param("state.json", '{"version": 99, "images": {}}', id="unknown-version"),
    pytest.param("digest-cache.json", '{"version": 1, "entries": {"/a": [1]}}', id="cache"),
    pytest.param("digest-cache.json", "\x00\x01garbage", id="cache-garbage"),
]


@pytest.mark.parametrize(("name", "text"), CORRUPT)
def test_corrupt_files_are_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, text: str
) -> None:
    (tmp_path / name).write_text(text)
    store = StateStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="imaged.daemon.store"):
        if name == "state.json":
            assert store.load() == {}
        else:
            assert store.load_cache().entries == {}
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{name}.corrupt-")]
    assert len(aside) == 1
    assert aside[0].read_text() == text
    assert not (tmp_path / name).exists()
    assert "is corrupt" in caplog.text


HOLDER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from imaged.daemon.store import StateStore
    StateStore(Path(sys.argv[1])).lock()
    print("locked", flush=True)
    time.sleep(60)
""")


def test_a_second_process_cannot_take_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        store = StateStore(tmp_path)
        with pytest.raises(ImagedError, match=rf"in use by pid {holder.pid}$"):
            store.lock()
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    store.lock()  # the holder died: its lock died with it
    assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
    store.unlock()


def test_lock_is_reentrant_and_released_by_unlock(tmp_path: Path) -> None:
    first, second = StateStore(tmp_path), StateStore(tmp_path)
    first.lock()
    first.lock()
    with pytest.raises(ImagedError, match="is in use"):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()
