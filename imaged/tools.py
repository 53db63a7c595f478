"""Pinned versions of the tools imaged installs inside images; each is part of the digest."""

from __future__ import annotations

UV_VERSION = "0.13.8"
POETRY_VERSION = "1.8.5"
# Bump when the rendered Dockerfile for the same spec changes what gets built.
RENDER_VERSION = 2  # 2: Flyte's secret variables, uv/poetry default groups
VENV = "/opt/venv"
