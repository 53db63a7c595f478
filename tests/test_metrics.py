"""The Prometheus text exposition the daemon serves on /metrics."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pytest

from imaged.daemon.metrics import Counter, Histogram, Metrics

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


@dataclass
class Family:
    """One metric family as parsed: its type, help and samples in order."""

    type: str = ""
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def _labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        assert match, f"malformed labels {text!r} at {pos}"
        labels[match.group(1)] = _unescape(match.group(2))
        pos = match.end()
    return labels


def _family_of(name: str, families: dict[str, Family]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and families.get(base, Family()).type == "histogram":
            return base
    return name


def parse_exposition(text: str) -> dict[str, Family]:
    """Parse strictly: HELP then TYPE before any sample of a family, each family once."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, Family] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            assert re.fullmatch(_NAME, name), line
            assert name not in families, f"family twice: {line}"
            families[name] = Family(help=help_text)
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert name in families, f"TYPE without HELP: {line}"
            assert not families[name].type, f"TYPE twice: {line}"
            assert kind in _TYPES, line
            families[name].type = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"malformed sample line {line!r}"
            name, labels, value = match.groups()
            family = families.get(_family_of(name, families))
            assert family is not None, f"sample of no family: {line}"
            assert family.type, f"sample before its TYPE: {line}"
            family.samples.append((name, _labels(labels), float(value)))
    return families


def check_histogram(name: str, family: Family) -> list[tuple[float, float]]:
    """Assert the histogram invariants; return its (le, count) buckets."""
    buckets = [
        (float(labels["le"]), value)
        for sample, labels, value in family.samples
        if sample == f"{name}_bucket"
    ]
    bounds = [le for le, _ in buckets]
    counts = [n for _, n in buckets]
    assert bounds == sorted(bounds)
    assert bounds[-1] == math.inf
    assert counts == sorted(counts), "buckets must be cumulative"
    (count,) = [v for s, _, v in family.samples if s == f"{name}_count"]
    assert counts[-1] == count, "the +Inf bucket must equal _count"
    assert [s for s, _, _ in family.samples].count(f"{name}_sum") == 1
    return buckets


def test_empty_metrics_are_well_formed() -> None:
    families = parse_exposition(Metrics().render())
    assert {name: f.type for name, f in families.items()} == {
        "imaged_builds_total": "counter",
        "imaged_watch_events_total": "counter",
        "imaged_build_seconds": "histogram",
        "imaged_push_seconds": "histogram",
        "imaged_save_to_pushed_seconds": "histogram",
        "imaged_queue_depth": "gauge",
        "imaged_watched_paths": "gauge",
    }
    assert families["imaged_builds_total"].samples == []
    for name in ("imaged_build_seconds", "imaged_push_seconds"):
        assert all(n == 0 for _, n in check_histogram(name, families[name]))


def test_populated_metrics_parse_with_their_values() -> None:
    metrics = Metrics(queue_depth=3, watched_paths=12)
    for result in ("pushed", "pushed", "failed"):
        metrics.builds.inc(result)
    metrics.events.inc("batch", 5)
    for seconds in (0.05, 0.3, 0.3, 7.0, 4000.0):
        metrics.build_seconds.observe(seconds)
    families = parse_exposition(metrics.render())
    assert families["imaged_builds_total"].samples == [
        ("imaged_builds_total", {"result": "failed"}, 1.0),
        ("imaged_builds_total", {"result": "pushed"}, 2.0),
    ]
    assert families["imaged_watch_events_total"].samples[0][2] == 5.0
    assert families["imaged_queue_depth"].samples == [("imaged_queue_depth", {}, 3.0)]
    assert families["imaged_watched_paths"].samples == [("imaged_watched_paths", {}, 12.0)]
    buckets = dict(check_histogram("imaged_build_seconds", families["imaged_build_seconds"]))
    assert (buckets[0.1], buckets[0.25], buckets[0.5], buckets[10.0]) == (1, 1, 3, 4)
    assert (buckets[1800.0], buckets[math.inf]) == (4, 5)
    sums = [v for s, _, v in families["imaged_build_seconds"].samples if s.endswith("_sum")]
    assert sums == [pytest.approx(4007.65)]


@pytest.mark.parametrize(
    ("seconds", "bucket", "below"),
    [
        pytest.param(0.1, 0.1, 0.0, id="bound-is-inclusive"),
        pytest.param(0.1000001, 0.25, 0.1, id="just-above-a-bound"),
        pytest.param(1800.0, 1800.0, 300.0, id="largest-bound"),
        pytest.param(1800.5, math.inf, 1800.0, id="only-in-inf"),
    ],
)
def test_histogram_bucket_of_one_observation(seconds: float, bucket: float, below: float) -> None:
    histogram = Histogram("h_seconds", "A test histogram.")
    histogram.observe(seconds)
    family = parse_exposition("\n".join(histogram.render()) + "\n")["h_seconds"]
    buckets = dict(check_histogram("h_seconds", family))
    assert buckets[bucket] == 1
    assert buckets.get(below, 0) == 0


@pytest.mark.parametrize(
    ("amount", "rendered"),
    [
        pytest.param(1234567.0, "1234567", id="large-count-keeps-every-digit"),
        pytest.param(3.0, "3", id="whole"),
        pytest.param(0.25, "0.25", id="fraction"),
    ],
)
def test_counter_values_keep_their_digits(amount: float, rendered: str) -> None:
    counter = Counter("c_total", "A test counter.", "kind")
    counter.inc("x", amount)
    assert counter.render()[-1] == f'c_total{{kind="x"}} {rendered}'


def test_label_values_are_escaped() -> None:
    counter = Counter("c_total", "A test counter.", "kind")
    odd = 'say "hi"\\ then\nnewline'
    counter.inc(odd)
    family = parse_exposition("\n".join(counter.render()) + "\n")["c_total"]
    assert family.samples == [("c_total", {"kind": odd}, 1.0)]
