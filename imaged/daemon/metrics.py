"""Prometheus metrics of the daemon, rendered in the text exposition format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


def _number(value: float) -> str:
    """A sample value without losing digits (``f"{1234567.0:g}"`` would give 1.23457e+06)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _label(value: str) -> str:
    """A label value escaped as the text format requires: backslash, quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Counter:
    """A counter with one label."""

    name: str
    help: str
    label: str
    values: dict[str, float] = field(default_factory=dict)

    def inc(self, label_value: str, amount: float = 1.0) -> None:
        self.values[label_value] = self.values.get(label_value, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for value, count in sorted(self.values.items()):
            lines.append(f'{self.name}{{{self.label}="{_label(value)}"}} {_number(count)}')
        return lines


@dataclass
class Histogram:
    """A histogram of seconds."""

    name: str
    help: str
    counts: list[int] = field(default_factory=lambda: [0] * len(_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self.count += 1
        for i, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for bound, n in zip(_BUCKETS, self.counts, strict=True):
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {n}')
        lines += [
            f'{self.name}_bucket{{le="+Inf"}} {self.count}',
            f"{self.name}_sum {_number(self.total)}",
            f"{self.name}_count {self.count}",
        ]
        return lines


@dataclass
class Metrics:
    """Everything /metrics exposes."""

    builds: Counter = field(
        default_factory=lambda: Counter("imaged_builds_total", "Builds by result.", "result")
    )
    engine_builds: Counter = field(
        default_factory=lambda: Counter(
            "imaged_engine_builds_total", "Builds by the pool engine that ran them.", "engine"
        )
    )
    events: Counter = field(
        default_factory=lambda: Counter(
            "imaged_watch_events_total", "File event batches handled.", "kind"
        )
    )
    build_seconds: Histogram = field(
        default_factory=lambda: Histogram("imaged_build_seconds", "Time spent building an image.")
    )
    push_seconds: Histogram = field(
        default_factory=lambda: Histogram("imaged_push_seconds", "Time spent pushing an image.")
    )
    save_to_pushed: Histogram = field(
        default_factory=lambda: Histogram(
            "imaged_save_to_pushed_seconds", "From the first file change to the pushed manifest."
        )
    )
    queue_depth: int = 0
    watched_paths: int = 0
    engines: list[dict[str, Any]] = field(default_factory=list)  # a pool's engine states

    def _engine_lines(self) -> list[str]:
        gauges = (
            ("imaged_engine_up", "1 while the pool engine answers, 0 while it is down.", "up"),
            ("imaged_engine_builds_running", "Builds running on the pool engine.", "running"),
            ("imaged_engine_capacity", "Builds the pool engine runs at once.", "capacity"),
        )
        """A pool's engines (none without a pool: a single engine adds nothing here)."""
        if not self.engines and not self.engine_builds.values:
            return []
        lines = self.engine_builds.render()
        for name, help_text, key in gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            for engine in self.engines:
                value = int(engine["state"] == "up") if key == "up" else int(engine[key])
                lines.append(f'{name}{{engine="{_label(str(engine["engine"]))}"}} {value}')
        return lines

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.builds,
            self.events,
            self.build_seconds,
            self.push_seconds,
            self.save_to_pushed,
        ):
            lines += metric.render()
        lines += [
            "# HELP imaged_queue_depth Images waiting to build.",
            "# TYPE imaged_queue_depth gauge",
            f"imaged_queue_depth {self.queue_depth}",
            "# HELP imaged_watched_paths Roots handed to the file watcher.",
            "# TYPE imaged_watched_paths gauge",
            f"imaged_watched_paths {self.watched_paths}",
        ]
        lines += self._engine_lines()
        return "\n".join(lines) + "\n"
