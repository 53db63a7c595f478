"""write_atomic under concurrency: every writer renames its own temporary file."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from imaged.atomic_write import write_atomic


@pytest.mark.parametrize("durable", [False, True])
def test_threads_saving_one_file_at_once_never_lose_each_others_temporary(
    tmp_path: Path, durable: bool
) -> None:
    # Two daemon builds sharing a stem saved the same cache file at once; with one temporary
    # name per pid, one renamed the other's away and that build failed with ENOENT.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    target = tmp_path / "state" / "cache.json"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                write_atomic(target, json.dumps({"writer": n, "i": i}), durable=durable)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert json.loads(target.read_text())["i"] == 49  # whole, the last write of some writer
    assert [p.name for p in target.parent.iterdir()] == ["cache.json"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "cache.json"
    write_atomic(target, "old")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]
