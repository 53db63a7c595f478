"""``imaged watch`` / ``imaged daemon``: run the daemon with a live view, JSON events or logs."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import click

from imaged.builders.scratch import sweep_stale_scratch
from imaged.cli.build import check_builder_settings
from imaged.config import Settings, load_settings
from imaged.daemon.core import Daemon
from imaged.daemon.log import configure_logging, log_event
from imaged.daemon.views import StatusSource

_STYLE = {
    "up to date": "green",
    "queued": "yellow",
    "building": "cyan",
    "pushing": "blue",
    "failed": "red",
    "unknown": "magenta",
}


def _table(source: StatusSource) -> Any:
    """The live view: one row per image, then each definition module that failed to load."""
    from rich.table import Table

    status = source.snapshot()
    table = Table(title="imaged", expand=True)
    engines = status.get("engines") or []
    columns = ("image", "state", "tag", "last push", *(("engine",) if engines else ()), "why")
    for col in columns:
        table.add_column(col, overflow="fold")
    for view in status["images"]:
        pushed_at = view["pushed_at"]
        pushed = time.strftime("%H:%M:%S", time.localtime(pushed_at)) if pushed_at else ""
        if pushed and view.get("path"):
            pushed += f" ({view['path']})"
        state = view["state"]
        why = view["error"] if state == "failed" and view["error"] else view["why"]
        if engines and view.get("placement") and state in ("building", "pushing"):
            why = f"{why} [dim]({view['placement']})[/]"
        engine = (view.get("engine") or "",) if engines else ()
        styled = f"[{_STYLE.get(state, '')}]{state}[/]"
        table.add_row(view["name"], styled, view["tag"] or "", pushed, *engine, why)
    blank = ("",) if engines else ()
    for file, error in sorted(status["modules"].items()):
        if error:
            table.add_row(Path(file).name, "[red]definition error[/]", "", "", *blank, error)
    for row in _engine_rows(status):
        table.add_row(*row[:4], *blank, row[4])
    return table


def _engine_rows(status: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """A pool's engines: name, up/down, running/capacity, builds, error; and the pool's
    state when no engine is up."""
    rows = []
    for engine in status.get("engines") or []:
        up = engine["state"] == "up"
        state = "[green]engine up[/]" if up else "[red]engine down[/]"
        load = f"{engine['running']}/{engine['capacity']} running"
        rows.append(
            (engine["engine"], state, load, f"{engine['builds']} built", engine["error"] or "")
        )
    if status.get("engine_status") == "no engine available":
        rows.append(("pool", "[red]no engine available[/]", "", "", "builds wait and retry"))
    return rows


async def _run_live(daemon: Daemon) -> None:
    from rich.live import Live

    with Live(_table(daemon), refresh_per_second=4, transient=False) as live:
        daemon.add_sink(lambda _event: live.update(_table(daemon)))
        await daemon.run()


def _json_line(event: dict[str, Any]) -> None:
    """One NDJSON event on stdout. When the reader is gone (piped to ``head``), stdout is
    pointed at /dev/null, so the exit flush cannot fail again, and the error is raised
    for the daemon to stop this sink."""
    try:
        sys.stdout.write(json.dumps(event, default=str) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        raise


def run_daemon(
    paths: tuple[Path, ...],
    *,
    mode: str,
    settings: Settings,
    config_file: Path | None,
    overrides: dict[str, Any],
) -> None:
    """mode: "live" (rich view), "json" (NDJSON events on stdout) or "log" (structlog)."""
    configure_logging(json_output=None if mode != "log" else not sys.stderr.isatty())
    sweep_stale_scratch()  # secret files a killed build left behind

    def reload() -> Settings:
        return load_settings(config_file=config_file, overrides=overrides)

    anyio.run(check_builder_settings, settings)  # a settings error: one line, exit 78
    daemon = Daemon(settings, list(paths), reload_settings=reload)
    if mode == "json":
        daemon.add_sink(_json_line)
    elif mode == "log":
        daemon.add_sink(log_event)

    async def main() -> None:
        if mode == "live":
            await _run_live(daemon)
        else:
            await daemon.run()

    anyio.run(main)
    _exit_within(settings.shutdown_timeout)


def _exit_within(seconds: float) -> None:
    """Bound the exit: a push thread abandoned on cancel must not keep the process alive
    (interpreter shutdown joins it) until its push timeout; state is saved by now."""

    def force() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()


def pick_mode(as_json: bool) -> str:
    if as_json or not sys.stdout.isatty():
        return "json"
    return "live"


def status_command(address: str) -> int:
    import httpx

    try:
        # trust_env=False: a loopback request must never go through a configured proxy.
        response = httpx.get(f"http://{address}/status", timeout=5, trust_env=False)
        response.raise_for_status()
        data = response.json()
    except httpx.HTTPError as exc:
        click.echo(f"error: no daemon answers at {address}: {exc}", err=True)
        return 1
    except ValueError:
        click.echo(f"error: {address} answered, but not as an imaged daemon", err=True)
        return 1
    for view in data["images"]:
        click.echo(f"{view['name']}\t{view['state']}\t{view['tag'] or '-'}\t{view['why']}")
    for file, error in data["modules"].items():
        if error:
            click.echo(f"{file}\tdefinition error\t{error}")
    for engine in data.get("engines") or []:
        load = f"{engine['running']}/{engine['capacity']}"
        click.echo(f"engine {engine['engine']}\t{engine['state']}\t{load}\t{engine['error'] or ''}")
    if data.get("engine_status"):
        click.echo(f"pool\t{data['engine_status']}")
    return 0
