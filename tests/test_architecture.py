"""The shape of imaged, held by its imports (docs/architecture.md, issue 8).

Every module under ``imaged/`` is parsed with ``ast`` and each import (at module level, inside
a function, or under ``if TYPE_CHECKING:``) becomes an edge between two modules. Three rules:

1. **Direction**: a package imports only packages before it in :data:`ORDER`; ``registry`` and
   ``builders`` are siblings and import neither each other. The one upward edge allowed is
   the lazy ``Image.uri`` / ``.tag`` / ``.digest`` facade: ``spec/image.py`` into ``digest/``,
   never at module level.
2. **No cycles** between modules, inside a package too (a type-only import counts: it is how
   ``server.py`` reads the Daemon's internals).
3. **Pure packages stay pure**: importing ``spec/``, ``digest/`` or ``render/`` pulls in no I/O
   library, through any module it imports at run time.

The rules are functions over a plain graph, so the tests at the bottom feed them synthetic
modules and check that a new violation of each kind fails.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "imaged"

# Each tier imports only tiers before it. Packages in one tier may import each other (the
# cycle rule keeps that acyclic) unless they are declared siblings below.
ORDER: tuple[tuple[str, ...], ...] = (
    ("errors", "safe_read", "atomic_write", "failures"),
    ("config",),
    ("events",),
    ("spec",),
    ("digest",),
    ("render",),
    ("registry", "builders"),
    ("pipeline",),
    ("definitions",),
    ("daemon",),
    ("cli",),
    ("__init__", "__main__"),  # the public API and `python -m imaged`: they may import anything
)
SIBLINGS = frozenset({frozenset({"registry", "builders"})})
PURE = frozenset({"spec", "digest", "render"})
IO_LIBRARIES = frozenset({"anyio", "httpx", "docker", "watchfiles", "rich", "click", "structlog"})
# The one allowed upward edge: the lazy Image.uri/.tag/.digest facade (and its type-only
# import of ImageDigest), never a module-level import.
FACADE = ("imaged.spec.image", "imaged.digest.")

# Violations in today's code that another helper of issue 8 is removing. The lead empties
# this at merge; an entry that no longer matches a violation fails the test (remove it then).
ALLOWED_CYCLE_EDGES: dict[tuple[str, str], str] = {
    # (a8layers splits digest/hashing.py into encoding, cache, trees and image_digest; a
    # hashing <-> trees cycle left by that split would be listed here, naming a8layers.)
}


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (both dotted module names); ``where`` is how."""

    source: str
    target: str
    line: int
    where: str  # "module" (runs at import), "lazy" (inside a function) or "typing" (type-only)


# -- reading the imports ------------------------------------------------------------------


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterable[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with how it runs."""

    def walk(node: ast.AST, where: str) -> Iterable[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, where
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, "typing" if where == "typing" else "lazy")
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), "typing")
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), where)
            else:
                yield from walk(child, where)

    yield from walk(tree, "module")


def _targets(node: ast.Import | ast.ImportFrom, source: str, is_package: bool) -> list[str]:
    """The dotted names an import statement reads (``from a import b`` may read module a.b)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = source.split(".") if is_package else source.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        stem = ".".join([*base, node.module] if node.module else base)
    else:
        stem = node.module or ""
    return [stem, *(f"{stem}.{alias.name}" for alias in node.names)]


def read_graph(root: Path = ROOT) -> tuple[set[str], list[Edge]]:
    """The modules under ``root`` and every import between them, or into other libraries
    (whose target is their top-level name)."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    edges: list[Edge] = []
    for file in files:
        source = module_name(file, root)
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for node, where in _imports(tree):
            names = _targets(node, source, file.name == "__init__.py")
            inside = [n for n in names if n in modules and n != source]
            # ``from imaged.spec import layers``: the module imaged.spec.layers, not the package
            chosen = [n for n in inside if n != names[0]] or inside[:1]
            if not chosen and names[0] and names[0].split(".")[0] != "imaged":
                chosen = [names[0].split(".")[0]]
            edges += [Edge(source, target, node.lineno, where) for target in chosen]
    return modules, edges


# -- the rules ----------------------------------------------------------------------------


def package_of(module: str) -> str:
    """``imaged.spec.image`` -> ``spec``; ``imaged.errors`` -> ``errors``; ``imaged`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(package: str) -> int:
    for rank, tier in enumerate(ORDER):
        if package in tier:
            return rank
    raise AssertionError(f"package {package!r} is not in ORDER: add it where it belongs")


def _is_facade(edge: Edge) -> bool:
    source, target_prefix = FACADE
    return edge.source == source and edge.target.startswith(target_prefix)


def direction_violations(modules: set[str], edges: Iterable[Edge]) -> list[str]:
    found = []
    for e in edges:
        if e.target not in modules:
            continue
        src, dst = package_of(e.source), package_of(e.target)
        if src == dst or (_is_facade(e) and e.where != "module"):
            continue
        if frozenset({src, dst}) in SIBLINGS or _rank(dst) > _rank(src):
            found.append(f"{e.source}:{e.line} imports {e.target} ({src} -> {dst}, {e.where})")
    return found


def _components(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    part = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        part.append(top)
                        if top == node:
                            break
                    if len(part) > 1:
                        found.append(sorted(part))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def cycles(
    modules: set[str], edges: Iterable[Edge], allowed: Mapping[tuple[str, str], str]
) -> list[list[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.target in modules and not _is_facade(e) and (e.source, e.target) not in allowed:
            graph[e.source].add(e.target)
    return _components(graph)


def impure_imports(modules: set[str], edges: Iterable[Edge]) -> list[str]:
    """I/O libraries that importing a pure package pulls in, with the path that does it."""
    runtime: dict[str, list[Edge]] = {}
    for e in edges:
        if e.where != "typing":
            runtime.setdefault(e.source, []).append(e)
    found = []
    for start in sorted(m for m in modules if package_of(m) in PURE):
        seen = {start}
        todo: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
        while todo:
            module, path = todo.pop()
            for e in runtime.get(module, []):
                if e.target in IO_LIBRARIES:
                    found.append(f"{' -> '.join(path)} imports {e.target} (line {e.line})")
                elif e.target in modules and e.target not in seen:
                    seen.add(e.target)
                    todo.append((e.target, (*path, e.target)))
    return found


# -- the tests on imaged ------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> tuple[set[str], list[Edge]]:
    return read_graph()


def test_every_package_has_a_place_in_the_order(graph: tuple[set[str], list[Edge]]) -> None:
    modules, _ = graph
    placed = {package_of(m) for m in modules}
    assert [p for p in sorted(placed) if not any(p in tier for tier in ORDER)] == []


def test_imports_run_one_way(graph: tuple[set[str], list[Edge]]) -> None:
    found = direction_violations(*graph)
    assert not found, "imports against the order:\n" + "\n".join(found)


def test_no_import_cycles(graph: tuple[set[str], list[Edge]]) -> None:
    modules, edges = graph
    found = cycles(modules, edges, ALLOWED_CYCLE_EDGES)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_every_allowed_cycle_edge_is_still_needed(graph: tuple[set[str], list[Edge]]) -> None:
    modules, edges = graph
    stale = [
        (pair, owner)
        for pair, owner in ALLOWED_CYCLE_EDGES.items()
        if not any(pair[0] in c and pair[1] in c for c in cycles(modules, edges, {}))
    ]
    assert stale == [], "these edges no longer close a cycle: remove them from the allowlist"


def test_pure_packages_import_no_io_library(graph: tuple[set[str], list[Edge]]) -> None:
    found = impure_imports(*graph)
    assert not found, "I/O libraries under a pure package:\n" + "\n".join(found)


def test_the_walk_sees_lazy_and_type_only_imports(graph: tuple[set[str], list[Edge]]) -> None:
    """The facade is found as what it is: lazy and type-only edges, none at module level."""
    _, edges = graph
    facade = {e.where for e in edges if _is_facade(e)}
    assert facade == {"lazy", "typing"}


DOC = ROOT.parent / "docs" / "architecture.md"


def documented_modules(text: str) -> tuple[set[str], set[str]]:
    """(modules, coming modules) named in the tree block of docs/architecture.md, as
    paths relative to ``imaged/``: ``config.py``, ``spec/image.py``."""
    block = text.split("```\nimaged/\n", 1)[1].split("```", 1)[0]
    named: set[str] = set()
    coming: set[str] = set()
    folder = ""
    for line in block.splitlines():
        if match := re.match(r"^  ([a-z0-9_]+)/\s", line):
            folder = match[1] + "/"
            continue
        if match := re.match(r"^  ([a-z0-9_]+\.py)\s", line):
            folder, name = "", match[1]
        elif match := re.match(r"^    ([a-z0-9_]+\.py)\s", line):
            name = folder + match[1]
        else:
            continue
        (coming if "(coming)" in line else named).add(name)
    return named, coming


def test_the_architecture_doc_names_every_module() -> None:
    named, coming = documented_modules(DOC.read_text(encoding="utf-8"))
    actual = {
        str(f.relative_to(ROOT))
        for f in ROOT.rglob("*.py")
        if f.name != "__init__.py" or f.parent == ROOT
    }
    assert sorted(actual - named) == [], "modules docs/architecture.md does not name"
    assert sorted(named - actual) == [], "named in docs/architecture.md, not in imaged/"
    assert sorted(coming & actual) == [], "marked (coming) but already there"


# -- the tests of the rules, on synthetic modules -----------------------------------------


def _write(root: Path, files: Mapping[str, str]) -> tuple[set[str], list[Edge]]:
    for name, text in files.items():
        path = root / "imaged" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in (root / "imaged").rglob("*"):
        if folder.is_dir() and not (folder / "__init__.py").exists():
            (folder / "__init__.py").write_text("", encoding="utf-8")
    (root / "imaged" / "__init__.py").touch()
    return read_graph(root / "imaged")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"spec/image.py": "from imaged.daemon.core import Daemon\n", "daemon/core.py": ""},
            ["imaged.spec.image:1 imports imaged.daemon.core (spec -> daemon, module)"],
            id="upward-at-module-level",
        ),
        pytest.param(
            {"digest/a.py": "def f():\n    from imaged.render import b\n", "render/b.py": ""},
            ["imaged.digest.a:2 imports imaged.render.b (digest -> render, lazy)"],
            id="upward-lazy",
        ),
        pytest.param(
            {
                "config.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from imaged.spec.image import Image\n",
                "spec/image.py": "",
            },
            ["imaged.config:3 imports imaged.spec.image (config -> spec, typing)"],
            id="upward-type-only",
        ),
        pytest.param(
            {"registry/client.py": "from imaged.builders import base\n", "builders/base.py": ""},
            [
                "imaged.registry.client:1 imports imaged.builders.base (registry -> builders, module)"
            ],
            id="siblings",
        ),
        pytest.param(
            {
                "spec/image.py": "from imaged.digest.hashing import hash_image\n",
                "digest/hashing.py": "",
            },
            ["imaged.spec.image:1 imports imaged.digest.hashing (spec -> digest, module)"],
            id="facade-at-module-level",
        ),
        pytest.param(
            {
                "spec/image.py": "def f():\n    from imaged.digest import hashing\n",
                "digest/hashing.py": "",
            },
            [],
            id="facade-lazy-is-allowed",
        ),
        pytest.param(
            {
                "spec/layers.py": "def f():\n    from imaged.digest import hashing\n",
                "digest/hashing.py": "",
            },
            ["imaged.spec.layers:2 imports imaged.digest.hashing (spec -> digest, lazy)"],
            id="facade-is-only-image",
        ),
        pytest.param(
            {"cli/main.py": "from ..pipeline import build\n", "pipeline/build.py": ""},
            [],
            id="relative-downward",
        ),
        pytest.param(
            {"render/x.py": "from .. import daemon\n", "daemon/core.py": ""},
            ["imaged.render.x:1 imports imaged.daemon (render -> daemon, module)"],
            id="relative-upward",
        ),
    ],
)
def test_a_wrong_direction_is_found(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    assert direction_violations(*_write(tmp_path, files)) == expected


def test_a_new_cycle_is_found_even_lazy_and_inside_a_package(tmp_path: Path) -> None:
    modules, edges = _write(
        tmp_path,
        {
            "daemon/a.py": "from imaged.daemon import b\n",
            "daemon/b.py": "def f():\n    import imaged.daemon.c\n",
            "daemon/c.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from imaged.daemon.a import A\n",
        },
    )
    assert cycles(modules, edges, {}) == [["imaged.daemon.a", "imaged.daemon.b", "imaged.daemon.c"]]
    allowed = {("imaged.daemon.c", "imaged.daemon.a"): "someone"}
    assert cycles(modules, edges, allowed) == []


def test_the_facade_does_not_count_as_a_cycle(tmp_path: Path) -> None:
    modules, edges = _write(
        tmp_path,
        {
            "spec/image.py": "def uri():\n    from imaged.digest.hashing import hash_image\n",
            "digest/hashing.py": "from imaged.spec.image import Image\n",
        },
    )
    assert cycles(modules, edges, {}) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"render/context.py": "import docker\n"},
            ["imaged.render.context imports docker (line 1)"],
            id="direct",
        ),
        pytest.param(
            {"spec/image.py": "def f():\n    import httpx.auth\n"},
            ["imaged.spec.image imports httpx (line 2)"],
            id="lazy-submodule",
        ),
        pytest.param(
            {
                "digest/files.py": "from imaged import config\n",
                "config.py": "from rich import print\n",
            },
            ["imaged.digest.files -> imaged.config imports rich (line 1)"],
            id="through-a-lower-module",
        ),
        pytest.param(
            {
                "render/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import anyio\n"
            },
            [],
            id="type-only-is-no-import",
        ),
        pytest.param({"daemon/core.py": "import anyio\n"}, [], id="impure-package-may"),
    ],
)
def test_an_io_library_under_a_pure_package_is_found(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    assert impure_imports(*_write(tmp_path, files)) == expected
