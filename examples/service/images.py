"""The images of a small HTTP service: the FastAPI `api` and a background `worker`.

Both copy the contents of the same `src/` folder to /app (so `/app/app/main.py`), minus what
`.dockerignore` excludes; one edit there re-tags both images. Every step that runs a command
comes before the sources: the layers after them are files only (sources, workdir, env), so an
edit of `src/` never re-runs a command, and imaged's registry fast path can append them.
Relative paths resolve against this file's folder. Override the registry with `--registry`.
"""

from pathlib import Path

from imaged import Image

REGISTRY = "localhost:5000"


def python_base(name: str) -> Image:
    """Debian with Python 3.11: the starting point both images share."""
    return Image.from_debian_base(python_version=(3, 11), registry=REGISTRY, name=name)


api = (
    python_base("service-api")
    .with_apt_packages("curl")
    .with_pip_packages("fastapi==0.115.0", "uvicorn==0.30.6")
    .with_commands(["python3 -c 'import fastapi, uvicorn'"])
    .with_dockerignore(Path(".dockerignore"))
    .with_source_folder(Path("src"), dst="/app", copy_contents_only=True)
    .with_workdir("/app")
    .with_env_vars({"PORT": "8000"})
)

worker = (
    python_base("service-worker")
    .with_requirements(Path("requirements-worker.txt"))
    .with_dockerignore(Path(".dockerignore"))
    .with_source_folder(Path("src"), dst="/app", copy_contents_only=True)
    .with_workdir("/app")
    .with_env_vars({"WORKER_INTERVAL_SECONDS": "5"})
)
