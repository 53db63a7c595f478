"""The HTTP API: run it with `uvicorn app.main:app --host 0.0.0.0 --port $PORT`."""

from __future__ import annotations

import os

from fastapi import FastAPI

from app import __version__

app = FastAPI(title="imaged example service", version=__version__)


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness probe: answers as long as the process serves requests."""
    return {"status": "ok", "version": __version__}


@app.get("/greet/{name}")
def greet(name: str) -> dict[str, str]:
    """Say hello; the greeting comes from the GREETING environment variable."""
    return {"message": f"{os.environ.get('GREETING', 'Hello')}, {name}!"}


def run() -> None:
    """Serve the API on $PORT (default 8000)."""
    import uvicorn

    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    run()
