"""bench/fastpath_bench.py: the summary logic (medians, ratios, verdicts, "n/a", paths)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "fastpath_bench.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastpath_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastpath_bench"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fb = _load()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([3.0, 1.0, 2.0], 2.0, id="odd"),
        pytest.param([1.0, None, 3.0], 2.0, id="missing-skipped"),
        pytest.param([None, None], None, id="none-reported"),
        pytest.param([], None, id="empty"),
    ],
)
def test_median(values: list[float | None], expected: float | None) -> None:
    assert fb.median(values) == expected


@pytest.mark.parametrize(
    ("value", "target", "expected"),
    [
        pytest.param(0.1, 0.1, "PASS", id="at-target"),
        pytest.param(0.11, 0.1, "FAIL", id="over"),
        pytest.param(None, 0.1, "n/a", id="unmeasured"),
    ],
)
def test_verdict(value: float | None, target: float, expected: str) -> None:
    assert fb.verdict(value, target) == expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        pytest.param(None, "ms", "n/a", id="absent"),
        pytest.param(0.0042, "ms", "4.2 ms", id="sub-10ms-decimal"),
        pytest.param(1.5, "ms", "1500 ms", id="ms"),
        pytest.param(1500, "bytes", "1.5 kB", id="kB"),
        pytest.param(2_500_000, "bytes", "2.50 MB", id="MB"),
        pytest.param(0.0512, "x", "0.05x", id="ratio"),
    ],
)
def test_fmt(value: float | None, unit: str, expected: str) -> None:
    assert fb.fmt(value, unit) == expected


def test_ratio_guards_missing_and_zero() -> None:
    assert fb.ratio(1.0, 4.0) == 0.25
    assert fb.ratio(None, 4.0) is None
    assert fb.ratio(1.0, 0.0) is None


def test_paths_before_the_fast_path_are_full() -> None:
    records: list[dict[str, Any]] = [{}, {"path": "fast"}, {"path": "full", "path_reason": "r"}]
    assert fb.path_taken(records[0]) == "full"
    assert fb.paths_summary([{}, {}, records[1]]) == "full x2, fast x1"
    assert fb.paths_summary(records[2:]) == "full (r) x1"


def test_fields_absent_today_give_none() -> None:
    records: list[dict[str, Any]] = [{"timings": {"hash": 0.5}}, {"uploaded_bytes": 10}]
    assert fb.timing_values(records, "hash") == [0.5, None]
    assert fb.field_values(records, "uploaded_bytes") == [None, 10.0]
    assert fb.median(fb.timing_values(records, "upload")) is None


def _samples(*listed: float) -> list[Any]:
    return [fb.Sample(listed=x, finished=x, tag=f"t{i}") for i, x in enumerate(listed)]


def test_side_rows_ratio_to_plain_and_targets() -> None:
    res = fb.SizeResult(
        files=5000,
        total_bytes=1,
        samples={
            "plain": _samples(1.0, 2.0, 3.0),
            "daemon": _samples(0.1, 0.2, 0.15),
            "build": _samples(1.0, 1.5, 2.0),
        },
        floor={},
        compressed={},
        streams=[],
    )
    rows = {row["side"]: row for row in fb.side_rows(res)}
    assert rows["plain"]["ratio"] is None
    assert rows["plain"]["verdict"] is None
    assert rows["daemon"]["ratio"] == pytest.approx(0.075)
    assert (rows["daemon"]["target"], rows["daemon"]["verdict"]) == (0.1, "PASS")
    assert rows["build"]["ratio"] == pytest.approx(0.75)
    assert (rows["build"]["target"], rows["build"]["verdict"]) == (0.5, "FAIL")


def test_no_build_target_at_200_files() -> None:
    samples = {side: _samples(1.0) for side in fb.SIDES}
    res = fb.SizeResult(200, 1, samples, {}, {}, [])
    rows = {row["side"]: row for row in fb.side_rows(res)}
    assert rows["build"]["target"] is None
    assert rows["daemon"]["verdict"] == "FAIL"  # 1.0x against <= 0.35x
