"""structlog set-up: human-readable on a terminal, JSON lines otherwise. Never secret values."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(*, json_output: bool | None = None, level: int = logging.INFO) -> None:
    """Route structlog to stderr; JSON when not a TTY unless told otherwise."""
    as_json = (not sys.stderr.isatty()) if json_output is None else json_output
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def log_event(event: dict[str, Any]) -> None:
    """A daemon event as a log line; every event names its image (or none)."""
    fields = {k: v for k, v in event.items() if k not in ("event", "ts")}
    fields.setdefault("image", None)
    name = str(event.get("event"))
    logger = structlog.get_logger("imaged")
    if name in ("failed", "definition_error", "hash_error", "config_error", "status_error"):
        logger.error(name, **fields)
    else:
        logger.info(name, **fields)
