"""Load definition modules in a fresh child interpreter, so the daemon never imports user code.

The parent runs ``python -P -m imaged.definitions.child FILE`` with the file's folder as working
directory. The child imports the module with :mod:`imaged.definitions.loader` and prints one JSON
document on its real stdout; whatever the user's module prints goes to stderr instead.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import sys
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from imaged.config import DEFAULTS, without_secrets
from imaged.errors import DefinitionError, SpecError
from imaged.safe_read import read_regular
from imaged.spec.image import Image, find_project_root

STDERR_TAIL_LINES = 20
SKIPPED_DIRS = frozenset({"__pycache__", ".venv", "site-packages", "node_modules"})
_MENTIONS_IMAGED = re.compile(rb"\b(?:import|from)\s+imaged\b")
_IMAGED_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class LoadedModule:
    """The images one definition file defines, and the local files it imported."""

    path: Path
    images: dict[str, Image]
    imported_files: tuple[Path, ...]
    variables: dict[str, str] = field(default_factory=dict)  # variable name -> image name


# -- discovery -----------------------------------------------------------------------------


def _mentions_imaged(path: Path) -> bool:
    try:
        return _MENTIONS_IMAGED.search(read_regular(path)) is not None
    except OSError:
        return False


def _python_files(folder: Path, *, recursive: bool) -> list[Path]:
    if not recursive:
        return [p for p in folder.glob("*.py") if p.is_file()]
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS]
        found.extend(Path(root, f) for f in files if f.endswith(".py"))
    return found


def discover_definition_files(paths: Sequence[Path], *, recursive: bool = False) -> list[Path]:
    """Definition files among ``paths``: a file is itself, a folder gives its ``*.py`` files
    that import imaged (searched recursively with ``recursive=True``), sorted and resolved.

    >>> discover_definition_files([Path("deploy/")], recursive=True)  # doctest: +SKIP
    [PosixPath('/repo/deploy/images.py'), PosixPath('/repo/deploy/jobs/images.py')]
    """
    found: set[Path] = set()
    for path in paths:
        if path.is_file():
            found.add(path.resolve())
        elif path.is_dir():
            candidates = _python_files(path, recursive=recursive)
            found.update(p.resolve() for p in candidates if _mentions_imaged(p))
        else:
            raise DefinitionError("definition file or folder not found", file=str(path))
    return sorted(found)


# -- the parent side ---------------------------------------------------------------------


def _child_env(python: str | None) -> dict[str, str]:
    """The environment of the child: ours, without build secrets (user code runs there and
    never needs their values), and with this imaged importable."""
    env = without_secrets(os.environ)
    if python is None:
        # Same interpreter: make sure the child imports this very imaged, even from a checkout.
        parts = [str(_IMAGED_DIR.parent), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def _read_all(stream: anyio.abc.ByteReceiveStream, sink: bytearray) -> None:
    async for chunk in stream:
        sink.extend(chunk)


OutputEcho = Callable[[str], None]


async def _read_tail(
    stream: anyio.abc.ByteReceiveStream, sink: collections.deque[str], echo: OutputEcho | None
) -> None:
    pending = b""
    async for chunk in stream:
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            sink.append(line.decode(errors="replace"))
            if echo is not None:
                echo(sink[-1])
    if pending:
        sink.append(pending.decode(errors="replace"))
        if echo is not None:
            echo(sink[-1])


def _kill_group(process: anyio.abc.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def _run_child(
    command: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    limit_s: float,
    echo: OutputEcho | None = None,
) -> tuple[int | None, bytes, list[str]]:
    """Run the child; returns (exit code or None on timeout, stdout, last stderr lines)."""
    out = bytearray()
    err: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    process = await anyio.open_process(command, cwd=cwd, env=env, start_new_session=True)
    try:
        async with process:
            assert process.stdout is not None
            assert process.stderr is not None
            with anyio.move_on_after(limit_s):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_read_all, process.stdout, out)
                    tg.start_soon(_read_tail, process.stderr, err, echo)
                    await process.wait()
                return process.returncode, bytes(out), list(err)
            _kill_group(process)
            return None, bytes(out), list(err)
    finally:
        if process.returncode is None:
            _kill_group(process)


def _exit_description(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code} (os._exit() in the module?)"


def _parse_result(path: Path, code: int, stdout: bytes, stderr: list[str]) -> LoadedModule:
    try:
        doc = json.loads(stdout)
        ok = doc["ok"]
    except (ValueError, TypeError, KeyError):
        tail = "\n".join(stderr).strip() or "(no output)"
        message = f"definition loader {_exit_description(code)} without a result; stderr:\n{tail}"
        raise DefinitionError(message, file=str(path)) from None
    if not ok:
        error = doc["error"]
        raise DefinitionError(error["message"], file=error["file"], line=error["line"])
    try:
        images = {name: Image.from_json(data) for name, data in doc["images"].items()}
        files = tuple(Path(p) for p in doc["imported_files"])
        variables = {str(k): str(v) for k, v in doc.get("variables", {}).items()}
    except (SpecError, KeyError, TypeError, AttributeError) as exc:
        # e.g. a python= interpreter whose imaged writes another spec version
        raise DefinitionError(f"unreadable loader result: {exc}", file=str(path)) from exc
    return LoadedModule(path=path, images=images, imported_files=files, variables=variables)


async def load_module_in_child(
    path: Path,
    *,
    timeout: float = DEFAULTS.load_timeout,  # noqa: ASYNC109 - a DefinitionError, not a cancel
    python: str | None = None,
    echo: OutputEcho | None = None,
) -> LoadedModule:
    """Import a definition file in a fresh interpreter and return its images.

    Every failure (syntax error, exception, ``sys.exit`` or ``os._exit``, crash, timeout, no
    or duplicate images) is a :class:`DefinitionError` naming the file and, when known, the
    line. What the module prints arrives on the child's stderr; ``echo`` gets each line.

    >>> loaded = await load_module_in_child(Path("deploy/images.py"))  # doctest: +SKIP
    >>> sorted(loaded.images)  # doctest: +SKIP
    ['api', 'worker']
    """
    file = Path(await anyio.Path(path).resolve())
    if not await anyio.Path(file).is_file():
        raise DefinitionError("definition file not found", file=str(file))
    command = [python or sys.executable, "-P", "-m", "imaged.definitions.child", str(file)]
    code, stdout, stderr = await _run_child(
        command, cwd=file.parent, env=_child_env(python), limit_s=timeout, echo=echo
    )
    if code is None:
        raise DefinitionError(f"loading timed out after {timeout:g} s", file=str(file))
    return _parse_result(file, code, stdout, stderr)


def load_target(
    target: str, *, timeout: float = DEFAULTS.load_timeout, echo: OutputEcho | None = None
) -> dict[str, Image]:
    """``PATH[:NAME]``'s images, loaded in a child as the daemon loads them: the CLI's way.

    A module that exits, prints or reads secrets cannot end, corrupt or see the caller.
    """
    from imaged.definitions.loader import parse_target, select_images

    chosen = parse_target(target)

    async def load() -> LoadedModule:
        return await load_module_in_child(chosen.path, timeout=timeout, echo=echo)

    loaded = anyio.run(load)
    return select_images(loaded.images, chosen, variables=loaded.variables)


# -- the child side ----------------------------------------------------------------------


def load_targets(
    targets: Sequence[str],
    *,
    recursive: bool = False,
    timeout: float = DEFAULTS.load_timeout,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Image]:
    """The images of several ``PATH[:NAME]`` targets; a folder gives every definition file
    in it (with ``recursive``, below it too), as ``imaged plan`` and ``watch`` read them.

    Each file is loaded in a child (:func:`load_target`): a module that exits, prints or
    reads secrets cannot end, corrupt or see the caller, and one that takes longer than
    ``timeout`` seconds (the ``load_timeout`` setting) is an error; ``echo`` gets what it
    printed."""
    from imaged.definitions.loader import parse_target

    images: dict[str, Image] = {}
    origin: dict[str, Path] = {}
    for text in targets:
        target = parse_target(text)
        files = (
            [target.path]
            if target.name
            else discover_definition_files([target.path], recursive=recursive)
        )
        if not files:
            more = "" if recursive else "; pass --recursive to search the folders below it"
            raise DefinitionError(
                f"no definition file (a .py that imports imaged){more}", file=text
            )
        for file in files:
            text_of_file = f"{file}:{target.name}" if target.name else str(file)
            for name, image in load_target(text_of_file, timeout=timeout, echo=echo).items():
                if name in images and images[name] != image:
                    raise DefinitionError(
                        f"image {name!r} is also defined in {origin[name]}; give each "
                        "image its own name",
                        file=str(file.resolve()),
                    )
                images[name], origin[name] = image, file.resolve()
    return images


def _excluded_dirs() -> list[Path]:
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    found = [Path(sysconfig.get_path(name)).resolve() for name in names]
    return [*found, _IMAGED_DIR]


def _is_local(file: Path, roots: Sequence[Path], excluded: Sequence[Path]) -> bool:
    if file.suffix != ".py" or not any(file.is_relative_to(r) for r in roots):
        return False
    if any(part in (".venv", "site-packages") for part in file.parts):
        return False
    return not any(file.is_relative_to(e) for e in excluded)


def imported_local_files(definition: Path) -> tuple[Path, ...]:
    """Local ``.py`` files this interpreter imported from beside ``definition`` (or its
    project), plus the definition itself: the files whose edits change its images."""
    roots = [definition.parent, *filter(None, [find_project_root(definition.parent)])]
    excluded = _excluded_dirs()
    found = {definition}
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if isinstance(name, str):
            file = Path(name).resolve()
            if _is_local(file, roots, excluded):
                found.add(file)
    return tuple(sorted(found))


def _error_doc(exc: BaseException, file: Path) -> dict[str, Any]:
    if isinstance(exc, DefinitionError):
        loc = f"{exc.file}:{exc.line}" if exc.line is not None else exc.file
        message = str(exc).removeprefix(f"{loc}: ")
        return {"message": message, "file": exc.file, "line": exc.line}
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(file)]
    line = frames[-1].lineno if frames else None
    return {"message": f"{type(exc).__name__}: {exc}", "file": str(file), "line": line}


def _load(file: Path) -> dict[str, Any]:
    from imaged.definitions.loader import collect_images, image_variables, import_definition

    module = import_definition(file)
    images = collect_images(module, file=file)
    if not images:
        raise DefinitionError("defines no Image at module level", file=str(file))
    return {
        "ok": True,
        "images": {name: image.to_json() for name, image in images.items()},
        "imported_files": [str(p) for p in imported_local_files(file)],
        "variables": image_variables(module, images),
    }


def main(argv: list[str] | None = None) -> int:
    """The child: ``python -m imaged.definitions.child FILE`` prints one JSON document on stdout."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m imaged.definitions.child DEFINITION_FILE\n")
        return 2
    file = Path(args[0]).resolve()
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)  # the user's prints, and its subprocesses', go to stderr
    try:
        doc = _load(file)
    except BaseException as exc:  # a module's sys.exit() is a load error too
        doc = {"ok": False, "error": _error_doc(exc, file)}
    sys.stdout.flush()
    with open(real_stdout, "w", encoding="utf-8") as out:
        json.dump(doc, out)
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
