"""The one exception tree of imaged.

ImagedError                      every error imaged raises on purpose (CLI exit 1)
├── SpecError (ValueError)       an image definition is wrong: names the image and layer
│   ├── MissingPathError         a referenced file or folder is absent or of the wrong kind
│   └── HashTimeoutError         an input took over hash_timeout to read (a hung filesystem?)
├── ScriptHeaderError            a PEP 723 header is malformed: names the file and line
├── DefinitionError              a definition module failed to load: names the file and line
├── ConfigError                  a bad setting: names the key and file (CLI exit 78)
├── RegistryError                talking to a registry failed
│   ├── RegistryUnavailable      existence unknown: unreachable, 5xx, timeout (transient)
│   ├── RegistryNotFound         a manifest or blob that was read is not there (HTTP 404)
│   └── RegistryAuthError        credentials missing or refused
├── EngineError                  the Docker engine is unreachable or refused a call (transient)
├── SecretError                  a build secret could not be resolved on the build host
├── ContextChangedError          files changed while the context was staged (retry)
└── BuildError                   a build step failed: carries the instruction and output tail
    └── PushError                the engine failed to push

Whether an error is transient (retried with backoff) is read from one table,
:mod:`imaged.failures`, by whoever raises it.
"""

from __future__ import annotations

from imaged.failures import classify


class ImagedError(Exception):
    """Base of every error imaged raises on purpose."""

    exit_code = 1


class SpecError(ImagedError, ValueError):
    """An image definition is wrong."""

    def __init__(self, message: str, *, image: str | None = None, layer: str | None = None) -> None:
        self.image = image
        self.layer = layer
        where = []
        if image:
            where.append(f"image {image!r}")
        if layer:
            where.append(f"layer {layer}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class MissingPathError(SpecError):
    """A file or folder a layer references does not exist or is of the wrong kind."""


class HashTimeoutError(SpecError):
    """Hashing an input took longer than ``hash_timeout``: a read or a folder listing that
    does not return (a hung NFS or FUSE mount)."""


class ScriptHeaderError(ImagedError, ValueError):
    """A PEP 723 inline script metadata block is malformed."""

    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        self.file = file
        self.line = line
        loc = f"{file}:{line}" if line is not None else file
        super().__init__(f"{loc}: {message}")


class DefinitionError(ImagedError):
    """A definition module could not be loaded."""

    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        loc = f"{file}:{line}" if line is not None else file
        super().__init__(f"{loc}: {message}")


class ConfigError(ImagedError):
    """A configuration value is invalid (exit code 78, EX_CONFIG, so systemd does not loop)."""

    exit_code = 78

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None) -> None:
        self.key = key
        self.file = file
        where = " ".join(p for p in (f"{file}:" if file else "", f"{key}:" if key else "") if p)
        super().__init__(f"{where} {message}".strip())


class RegistryError(ImagedError):
    """Talking to a registry failed."""


class RegistryUnavailable(RegistryError):
    """The registry could not answer: existence is unknown. Transient, worth a retry."""

    transient = True


class RegistryNotFound(RegistryError):
    """A manifest or blob imaged reads (a stem, its config) is not in the registry."""


class RegistryAuthError(RegistryError):
    """The registry refused our credentials, or we have none for it."""


class EngineError(ImagedError):
    """The Docker engine is unreachable or refused a call."""

    transient = True


class SecretError(ImagedError):
    """A build secret could not be resolved on the build host."""


class ContextChangedError(ImagedError):
    """Files changed between hashing and staging; the caller re-hashes and tries again."""

    transient = True


class BuildError(ImagedError):
    """A build failed; carries the failing instruction and the last lines of output.

    ``transient`` is what :mod:`imaged.failures` made of the output: a registry that dropped
    the connection while BuildKit pulled is worth a retry, a RUN that exited non-zero is not.
    """

    def __init__(
        self,
        message: str,
        *,
        image: str | None = None,
        instruction: str | None = None,
        output_tail: str = "",
        transient: bool = False,
    ) -> None:
        self._transient = transient
        self.image = image
        self.instruction = instruction
        self.output_tail = output_tail
        parts = [f"image {image!r}: {message}" if image else message]
        if instruction:
            parts.append(f"failing instruction: {instruction}")
        if output_tail:
            parts.append("last output:\n" + output_tail)
        super().__init__("\n".join(parts))

    @property
    def transient(self) -> bool:
        return self._transient


class PushError(BuildError):
    """The engine failed to push the image.

    Transient or not as :func:`imaged.failures.classify` reads its message: a 5xx, a timeout
    or a dropped connection may pass (retried with backoff by the daemon); a denial, bad
    credentials or another 4xx will not.
    """

    @property
    def transient(self) -> bool:
        return classify(str(self)).transient


def is_transient(exc: BaseException) -> bool:
    """True for errors that a retry with backoff may cure (unreachable engine or registry)."""
    return bool(getattr(exc, "transient", False))
