"""Images of the `greeter` uv project, installed from its pyproject.toml and uv.lock.

`greeter-deps` holds only the locked dependencies (a stable layer to build on); `greeter` also
installs the project itself, so its `greeter` command is on the PATH.
Relative paths resolve against this file's folder. Override the registry with `--registry`.
"""

from pathlib import Path

from imaged import Image

REGISTRY = "localhost:5000"


def python_base(name: str) -> Image:
    """Debian with Python 3.11, the starting point of both images."""
    return Image.from_debian_base(python_version=(3, 11), registry=REGISTRY, name=name)


deps = python_base("greeter-deps").with_uv_project(
    Path("pyproject.toml"), project_install_mode="dependencies_only"
)

app = (
    python_base("greeter")
    .with_uv_project(Path("pyproject.toml"), project_install_mode="install_project")
    .with_commands(["greeter imaged"])
    .with_env_vars({"GREETER_GREETING": "Hello"})
)
