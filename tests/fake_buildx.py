"""A stand-in ``docker-buildx`` CLI plugin: real buildx is not installable here (no Debian
bookworm or PyPI package ships it), so the buildx builder's tests run this one instead.

It is installed into ``<docker config>/cli-plugins/`` and answers the plugin metadata call the
docker CLI makes, ``buildx version``, ``buildx inspect NAME`` (known names only; others get the
``ERROR: no builder "NAME" found`` real buildx prints) and ``buildx build``, which it performs
with the real engine: ``docker build`` (BuildKit) with the same tags, Dockerfile, context,
platform, secrets and build arguments, then ``docker push`` of each tag with the Docker config
it was handed, and it writes ``containerimage.digest`` (the pushed manifest digest) to the
``--metadata-file``. It records each call (argv, environment, the registries the Docker config
logs in to, never their secrets) as one JSON line. Cache flags (``--cache-to``/``--cache-from``)
are recorded and not performed: the engine here cannot export a registry cache.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCRIPT = r"""#!__PYTHON__
import json, os, re, subprocess, sys

LOG = __LOG__
CLI = __CLI__
BUILDERS = __BUILDERS__
VALUE_FLAGS = {"--builder", "--progress", "--metadata-file", "-t", "--tag", "-f", "--file",
               "--platform", "--secret", "--build-arg", "--cache-to", "--cache-from"}


def logins():
    folder = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    try:
        with open(os.path.join(folder, "config.json")) as handle:
            return sorted(json.load(handle).get("auths", {}))
    except (OSError, ValueError):
        return []


def record(args):
    entry = {"argv": sys.argv, "args": args, "env": dict(os.environ), "logins": logins(),
             "docker_config": os.environ.get("DOCKER_CONFIG")}
    with open(LOG, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def parse(args):
    options, positional, i = {}, [], 0
    while i < len(args):
        arg = args[i]
        if arg in VALUE_FLAGS:
            options.setdefault(arg, []).append(args[i + 1])
            i += 2
        elif arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            options.setdefault(key, []).append(value)
            i += 1
        elif arg.startswith("-"):
            options.setdefault(arg, []).append("")
            i += 1
        else:
            positional.append(arg)
            i += 1
    return options, positional


def no_builder(name):
    print(f'ERROR: no builder "{name}" found', file=sys.stderr)
    sys.exit(1)


def inspect(args):
    name = args[0] if args else BUILDERS[0]
    if name not in BUILDERS:
        no_builder(name)
    print(f"Name:          {name}\nDriver:        docker-container\n\nNodes:\n"
          f"Name:      {name}0\nEndpoint:  unix:///var/run/docker.sock\n"
          "Status:    running\nPlatforms: linux/amd64, linux/386")


def run(argv, env):
    print("fake-buildx: " + " ".join(argv[1:3]), flush=True)
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = done.stdout.decode("utf-8", "replace")
    sys.stdout.write(out)
    sys.stdout.flush()
    if done.returncode != 0:
        sys.exit(done.returncode)
    return out


def build(args):
    options, positional = parse(args)
    name = (options.get("--builder") or [BUILDERS[0]])[0]
    if name not in BUILDERS:
        no_builder(name)
    platforms = ",".join(options.get("--platform", []))
    if "," in platforms:
        print("ERROR: the stand-in buildx cannot build several platforms", file=sys.stderr)
        sys.exit(1)
    tags = options.get("-t", []) + options.get("--tag", [])
    argv = [CLI, "build", "--progress=plain"]
    for flag in ("-f", "--platform", "--secret", "--build-arg"):
        for value in options.get(flag, []):
            argv += [flag, value]
    for tag in tags:
        argv += ["-t", tag]
    if "--no-cache" in options:
        argv.append("--no-cache")
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    run(argv + positional, env)
    digest = None
    if "--push" in options:
        for tag in tags:
            found = re.search(r"digest: (sha256:[0-9a-f]{64})", run([CLI, "push", tag], env))
            digest = digest or (found and found[1])
    for path in options.get("--metadata-file", []):
        with open(path, "w") as handle:
            json.dump({"containerimage.digest": digest, "image.name": ",".join(tags)}, handle)


def main():
    args = sys.argv[1:]
    if args[:1] == ["docker-cli-plugin-metadata"]:
        print(json.dumps({"SchemaVersion": "0.1.0", "Vendor": "imaged tests",
                          "Version": "v0.0.0-stand-in", "ShortDescription": "stand-in buildx"}))
        return
    if args[:1] == ["buildx"]:
        args = args[1:]
    record(args)
    if args[:1] == ["version"]:
        print("github.com/docker/buildx v0.0.0-stand-in")
    elif args[:1] == ["inspect"]:
        inspect(args[1:])
    elif args[:1] == ["build"]:
        build(args[1:])
    else:
        print(f"ERROR: the stand-in buildx does not do {args[:1]}", file=sys.stderr)
        sys.exit(1)


main()
"""


@dataclass(frozen=True)
class FakeBuildx:
    """An installed stand-in plugin: its Docker config folder and its call log."""

    config_dir: Path
    log: Path

    def calls(self) -> list[dict[str, Any]]:
        """Every recorded call, oldest first."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def builds(self) -> list[dict[str, Any]]:
        return [call for call in self.calls() if call["args"][:1] == ["build"]]


def install_fake_buildx(
    config_dir: Path, *, docker_cli: str, builders: tuple[str, ...]
) -> FakeBuildx:
    """Write the plugin into ``config_dir/cli-plugins/docker-buildx``; it knows ``builders``."""
    plugins = config_dir / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    log = config_dir.parent / f"{config_dir.name}-buildx-calls.jsonl"
    script = (
        _SCRIPT.replace("__PYTHON__", sys.executable)
        .replace("__LOG__", repr(str(log)))
        .replace("__CLI__", repr(docker_cli))
        .replace("__BUILDERS__", repr(list(builders)))
    )
    path = plugins / "docker-buildx"
    path.write_text(script)
    path.chmod(0o755)
    return FakeBuildx(config_dir=config_dir, log=log)
