"""Images of a Flyte 2 project, as written for flyte 2.12 (tests port it by one line)."""

from pathlib import Path

from flyte import Image, Secret, TaskEnvironment

HERE = Path(__file__).parent
REG = "ghcr.io/acme"

base = Image.from_debian_base(python_version=(3, 11), install_flyte=False, registry=REG)

# A private git dependency behind a token: Flyte exports the secret as $GITHUB_PAT.
private = base.clone(name="port-private").with_commands(
    [
        'test -n "$GITHUB_PAT"',
        'mkdir -p /out && printf %s "$GITHUB_PAT" | sha256sum | cut -d" " -f1 > /out/pat.sha256',
    ],
    secret_mounts=["GITHUB_PAT"],
)

api = (
    base.clone(name="port-api")
    .with_requirements(HERE / "api" / "requirements.txt")
    .with_dockerignore(HERE / ".dockerignore")
    .with_source_folder(HERE / "src", "/app")
    .with_workdir(workdir="/app")
)

# No with_dockerignore: the project's .dockerignore applies, as Flyte reads its root's.
implicit = base.clone(name="port-implicit").with_source_folder(HERE / "src", "/app")

uv_app = base.clone(name="port-uv").with_uv_project(
    HERE / "uvproj" / "pyproject.toml", None, None, None, False, "--no-progress"
)

poetry_app = base.clone(name="port-poetry").with_poetry_project(
    HERE / "poetryproj" / "pyproject.toml", extra_args="--no-interaction"
)

script = Image.from_uv_script(
    HERE / "script.py",
    name="port-script",
    registry=REG,
    python_version=(3, 11),
    secret_mounts=Secret(key="hf-token", as_env_var="HF_TOKEN"),
)

vendor = (
    Image.from_base("nvcr.io/nvidia/pytorch:24.05-py3")
    .clone(name="port-vendor", registry=REG, extendable=True, registry_secret="nvcr-pull")
    .with_env_vars({"VENDOR": "nvidia"})
)

custom = Image.from_dockerfile(HERE / "custom" / "Dockerfile", REG, "port-custom", ("linux/amd64",))

prebuilt = Image.from_ref_name("prebuilt").with_env_vars({"FROM_REF": "1"})

bundle = base.clone(name="port-bundle").with_code_bundle(copy_style="all", dst="/root")

pinned = Image.from_debian_base(
    python_version=(3, 11), flyte_version="2.12.1", registry=REG, name="port-pinned"
)

env = TaskEnvironment(name="port-env", image=base.with_env_vars({"ROLE": "env"}))

variants = [base.with_env_vars({"VARIANT": "a"}), base.with_env_vars({"VARIANT": "b"})]
