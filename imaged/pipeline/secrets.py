"""Resolve build secrets on the build host: environment first, then the secrets folder."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from imaged.builders.base import SecretSource
from imaged.config import ENV_VARS, SECRET_ENV_PREFIX, Settings
from imaged.errors import ConfigError, SecretError
from imaged.render.dockerfile import CA_SECRET_ID
from imaged.spec.layers import Secret


def secret_file(secret: Secret, secrets_dir: Path) -> Path:
    """Where a secret's file lives: ``<secrets_dir>/<group>/<key>`` or ``<secrets_dir>/<key>``.

    A Secret's key and group are single file names (see :class:`Secret`); a file or group
    folder that is a symlink leading out of ``secrets_dir`` is refused as well, so a
    definition can only ever read what the operator put under ``secrets_dir``.
    """
    path = secrets_dir / secret.group / secret.key if secret.group else secrets_dir / secret.key
    root = Path(os.path.realpath(secrets_dir))  # realpath: a symlink loop is no RuntimeError
    if not Path(os.path.realpath(path)).is_relative_to(root):
        raise SecretError(
            f"secret {secret.id!r}: {path} leads out of secrets_dir {root} (a symlink?); "
            "put the file itself under secrets_dir"
        )
    return path


def resolve_secret(
    secret: Secret, settings: Settings, *, environ: Mapping[str, str] | None = None
) -> SecretSource:
    """The value of one secret, looked up in order and never logged.

    1. ``IMAGED_SECRET_<ENV_NAME>``, 2. the file under ``secrets_dir``. A plain ``<ENV_NAME>``
    is never consulted: ``Secret("path")`` must not quietly become ``$PATH``.

    >>> resolve_secret(Secret("tok"), Settings(), environ={"IMAGED_SECRET_TOK": "x"}).id
    'tok'
    """
    env = os.environ if environ is None else environ
    name = SECRET_ENV_PREFIX + secret.env_name
    looked = [f"environment variable {name}"]
    if name in env:
        return SecretSource(id=secret.id, value=env[name].encode())
    if settings.secrets_dir is None:
        looked.append(f"no file: secrets_dir is not set ({ENV_VARS['secrets_dir']})")
    else:
        path = secret_file(secret, settings.secrets_dir)
        looked.append(f"file {path}")
        try:
            return SecretSource(id=secret.id, value=path.read_bytes())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass
        except OSError as exc:
            raise SecretError(f"secret {secret.id!r}: cannot read {path}: {exc.strerror}") from exc
    raise SecretError(f"secret {secret.id!r} not found; looked at: " + "; ".join(looked))


def resolve_secrets(
    secrets: Iterable[Secret], settings: Settings, *, environ: Mapping[str, str] | None = None
) -> tuple[SecretSource, ...]:
    """Resolve every secret once. Two different secrets with one BuildKit id (``Secret("a.b")``
    and ``Secret("b", group="a")``) would share a value: that is an error."""
    out: dict[str, SecretSource] = {}
    seen: dict[str, Secret] = {}
    for secret in secrets:
        first = seen.setdefault(secret.id, secret)
        if (first.key, first.group) != (secret.key, secret.group):
            raise SecretError(
                f"secrets {first.key!r} (group {first.group!r}) and {secret.key!r} (group "
                f"{secret.group!r}) share the build id {secret.id!r}; rename one"
            )
        if secret.id not in out:
            out[secret.id] = resolve_secret(secret, settings, environ=environ)
    return tuple(out.values())


def ca_bundle_secret(settings: Settings) -> SecretSource | None:
    """The extra CA bundle trusted during builds, as the ``imaged_build_ca`` secret."""
    path = settings.build_ca_bundle
    if path is None:
        return None
    try:
        return SecretSource(id=CA_SECRET_ID, value=path.read_bytes())
    except OSError as exc:
        raise ConfigError(
            f"cannot read CA bundle {path}: {exc.strerror}", key="build_ca_bundle"
        ) from exc
