"""Time bounds on hashing: a first walk (or a whole hash) runs in a daemon thread, so a read
or a folder listing that never returns (a hung NFS or FUSE mount) fails the images that
read it, after ``hash_timeout`` seconds, and never the others. An abandoned thread is a
daemon thread: it cannot keep the process from exiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from imaged.digest.cache import DigestCache
from imaged.digest.files import ignore_files_of
from imaged.digest.ignore import IgnoreRules
from imaged.digest.image_digest import ImageDigest, hash_image
from imaged.digest.trees import TreeIndex, TreeProvider, TreeSource, shared_tree
from imaged.errors import HashTimeoutError
from imaged.safe_read import shown_path
from imaged.spec.bases import DockerfileBase
from imaged.spec.image import Image, ParentBase

T = TypeVar("T")


def timeout_error(
    path: Path | str, seconds: float, *, image: str | None = None, layer: str | None = None
) -> HashTimeoutError:
    """The error of an input whose hashing did not end in time."""
    return HashTimeoutError(
        f"hashing {shown_path(path)} has taken over {seconds:g} s: a hung filesystem?",
        image=image,
        layer=layer,
    )


def copied_by(image: Image, root: Path) -> tuple[str | None, str | None]:
    """The image (``image`` or a parent) and the layer that copy the folder ``root``."""
    for index, layer in enumerate(image.layers):
        if any(tree.root == root for tree in layer.inputs().trees):
            return image.name, image.layer_label(index)
    base = image.base
    if isinstance(base, DockerfileBase) and base.context == root:
        return image.name, "from_dockerfile"
    if isinstance(base, ParentBase):
        return copied_by(base.image, root)
    return image.name, None


@dataclass
class Outcome(Generic[T]):
    """What a call in a daemon thread gave, once ``done`` is set."""

    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    value: T | None = None
    error: BaseException | None = None

    def get(self) -> T:
        """The value, or the call's exception raised again; only once ``done`` is set."""
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


def start_in_thread(call: Callable[[], T], *, name: str) -> Outcome[T]:
    """Run ``call`` in a new daemon thread; its outcome is filled in when it returns."""
    outcome: Outcome[T] = Outcome()

    def run() -> None:
        try:
            outcome.value = call()
        except BaseException as exc:  # handed to whoever waits, as the call's own raise
            outcome.error = exc
        finally:
            outcome.done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    return outcome


class _Reading:
    """A TreeProvider that remembers which folder it is serving, to name it on a timeout."""

    def __init__(self, trees: TreeProvider, outside: str) -> None:
        self.trees, self.outside = trees, outside
        self.path: Path | str = outside

    def __call__(self, source: TreeSource, cache: DigestCache) -> TreeIndex:
        self.path = source.root
        tree = self.trees(source, cache)
        self.path = self.outside
        return tree


def hash_within(
    image: Image, seconds: float, *, name: str | None = None, trees: TreeProvider = shared_tree
) -> ImageDigest:
    """:func:`hash_image` if it ends within ``seconds``; else a HashTimeoutError naming the
    image and the folder being walked (or its other inputs). The thread is left behind.

    >>> # digest = hash_within(image, load_settings().hash_timeout, name="api")
    """
    reading = _Reading(trees, f"the inputs of image {name or image.name!r}")
    outcome = start_in_thread(lambda: hash_image(image, trees=reading), name="imaged-hash")
    if not outcome.done.wait(seconds):
        owner, layer = (image.name, None)
        if isinstance(reading.path, Path):
            owner, layer = copied_by(image, reading.path)
        raise timeout_error(reading.path, seconds, image=owner or name, layer=layer)
    return outcome.get()


@dataclass(frozen=True)
class Walked:
    """What a first walk gives: the rules it read, the index it built with them, and (for
    a folder with git's rules) the ignore files that can change them, nested ones included."""

    rules: IgnoreRules
    tree: TreeIndex
    ignore_files: tuple[Path, ...] = ()


def walk_tree(source: TreeSource, cache: DigestCache) -> Walked:
    """Read ``source``'s rules and build its index (digest included): a first walk."""
    rules = source.read_rules()
    tree = TreeIndex.build(source.root, rules, cache)
    _ = tree.digest
    if not source.gitignore or source.dockerfile_context:
        return Walked(rules, tree)
    ignores = ignore_files_of(source.root, source.extras, gitignore=True)
    return Walked(rules, tree, ignores)


class FirstWalks:
    """The first walks of folders, each in its own daemon thread and bounded in time.

    Each walk builds an independent :class:`TreeIndex` (the only state it shares is the
    digest cache, which is thread-safe); the owner adopts the result into its store. A walk
    that does not end in time stays pending: :meth:`late` names those done since, and the
    next :meth:`result` of its source returns it.

    >>> # walks = FirstWalks(60.0); walks.start(sources, cache); walked = walks.result(s, cache)
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._walks: dict[TreeSource, Outcome[Walked]] = {}
        self._lock = threading.Lock()

    def start(self, sources: Iterable[TreeSource], cache: DigestCache) -> None:
        """Start the walk of each source that has none under way (they run in parallel)."""
        for source in sources:
            self._walk(source, cache)

    def result(self, source: TreeSource, cache: DigestCache) -> Walked:
        """The walk of ``source`` (started now if none is under way), waiting what is left
        of its time bound; a HashTimeoutError naming its folder when that runs out."""
        walk = self._walk(source, cache)
        left = walk.started + self.timeout - time.monotonic()
        if not walk.done.wait(max(0.0, left)):
            raise timeout_error(source.root, self.timeout)
        with self._lock:
            self._walks.pop(source, None)
        return walk.get()

    def late(self) -> set[TreeSource]:
        """Sources whose walk ended after its bound ran out, not yet collected."""
        with self._lock:
            return {s for s, w in self._walks.items() if w.done.is_set()}

    def pending(self) -> set[TreeSource]:
        """Sources whose walk is still under way."""
        with self._lock:
            return {s for s, w in self._walks.items() if not w.done.is_set()}

    def forget(self, sources: Iterable[TreeSource]) -> None:
        """Drop the walks of ``sources`` (an ended walk nobody wants any more)."""
        with self._lock:
            for source in sources:
                self._walks.pop(source, None)

    def _walk(self, source: TreeSource, cache: DigestCache) -> Outcome[Walked]:
        with self._lock:
            walk = self._walks.get(source)
            if walk is None:
                name = f"imaged-walk {source.root}"
                walk = start_in_thread(lambda: walk_tree(source, cache), name=name)
                self._walks[source] = walk
            return walk
