"""Pinned versions of the tools imaged installs inside images; each is part of the digest."""

from __future__ import annotations

UV_VERSION = "0.13.8"
POETRY_VERSION = "1.8.5"
# Bump when the rendered Dockerfile or the staged context for the same spec changes what gets
# built. 2: staged files carry content-derived mtimes (#7), so no tag pushed before (which may
# hold stale bytes after a same-size edit) is trusted again; Flyte's secret variables and the
# uv/poetry default groups (#10).
RENDER_VERSION = 2
VENV = "/opt/venv"
