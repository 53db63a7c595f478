"""An image's registry logins: its ``registry_secret``, resolved like other secrets, on the
one credential path (existence checks, the base pull of the docker CLI, the engine's push)."""

from __future__ import annotations

from collections.abc import Mapping

import anyio.to_thread

from imaged.config import Settings
from imaged.errors import ImagedError, SecretError
from imaged.pipeline.secrets import resolve_secret
from imaged.registry.auth import Credentials, parse_login_secret
from imaged.registry.client import Existence, RegistryClient
from imaged.spec.image import Image, ParentBase

__all__ = ["check_images", "registry_logins"]


def registry_logins(image: Image, settings: Settings) -> dict[str, Credentials]:
    """The logins of `image` and the images it is built from, by registry host (the image's
    own win). Empty when none of them has a ``registry_secret``."""
    logins: dict[str, Credentials] = {}
    current: Image | None = image
    while current is not None:
        for host, found in _own_logins(current, settings).items():
            logins.setdefault(host, found)
        base = current.base
        current = base.image if isinstance(base, ParentBase) else None
    return logins


def _own_logins(image: Image, settings: Settings) -> dict[str, Credentials]:
    secret = image.registry_secret
    if secret is None:
        return {}
    try:
        value = resolve_secret(secret, settings).value
    except SecretError as exc:
        raise SecretError(f"registry_secret of image {image.name!r}: {exc}") from exc
    origin = f"registry_secret {secret.id!r} of image {image.name!r}"
    return parse_login_secret(value, image.registry, origin=origin)


async def check_images(
    client: RegistryClient, images: Mapping[str, Image], settings: Settings
) -> dict[str, Existence | ImagedError]:
    """Ask the registry about each URI (of `images`, by URI), each with its image's logins."""
    groups: dict[int, tuple[RegistryClient, list[str]]] = {}
    results: dict[str, Existence | ImagedError] = {}
    for uri, image in images.items():
        try:
            logins = await anyio.to_thread.run_sync(registry_logins, image, settings)
        except ImagedError as exc:
            results[uri] = exc
            continue
        view = client.with_logins(logins)  # one view per distinct set of logins
        groups.setdefault(id(view), (view, []))[1].append(uri)
    for view, uris in groups.values():
        results |= await view.check_many(uris)
    return {uri: results[uri] for uri in images}
