"""Code bundles honour every .gitignore git would: ancestors, nested files and info/exclude."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaged import Image
from imaged.digest.files import (
    FILE,
    folder_rules,
    ignore_files_of,
    is_rules_input,
    list_files,
)
from imaged.digest.ignore import IgnoreRules
from imaged.digest.image_digest import hash_image
from imaged.render.dockerfile import render_dockerfile

MONOREPO = {
    ".gitignore": ".env\n*.secret\n",
    "services/.gitignore": "/api/generated/\n/top.txt\n",
    "services/top.txt": "",
    "services/api/pyproject.toml": "[project]\nname = 'api'\n",
    "services/api/images.py": (
        "from imaged import Image\nimg = Image.from_base('r:1').with_code_bundle('all', '/code')\n"
    ),
    "services/api/.dockerignore": "*.log\n",
    "services/api/.env": "TOKEN=hunter2\n",
    "services/api/app.py": "",
    "services/api/top.txt": "",  # "/top.txt" is anchored to services/: this one stays
    "services/api/debug.log": "",
    "services/api/a.secret": "",
    "services/api/notes.local": "",
    "services/api/generated/out.py": "",
    "services/api/__pycache__/app.cpython-311.pyc": "",
    "services/api/build/.gitignore": "!*\n",  # inside an ignored folder: git never reads it
    "services/api/build/x.py": "",
    "services/api/sub/.gitignore": "!keep.secret\nlocal/\n",
    "services/api/sub/keep.secret": "",
    "services/api/sub/drop.secret": "",
    "services/api/sub/mod.py": "",
    "services/api/sub/.env": "",
    "services/api/sub/local/x.py": "",
    "services/api/sub/deeper/local/y.py": "",
    "services/api/other/local/z.py": "",
    "services/api/.gitignore": "build/\n",
}


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    """Real git, with no user or system configuration (no global excludes file)."""
    env = {
        **os.environ,
        "HOME": str(cwd),
        "XDG_CONFIG_HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def git_repo(root: Path, files: dict[str, str], *, exclude: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "exclude").write_text(exclude)
    make_tree(root, files)
    return root


def git_listing(folder: Path) -> set[str]:
    """What git lists for ``folder``: tracked files plus untracked ones not ignored."""
    return set(git(folder, "ls-files", "--others", "--exclude-standard", "--cached").split())


def load_image(path: Path) -> Image:
    spec = importlib.util.spec_from_file_location("imaged_test_codebundle", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image: Image = module.img
    return image


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    return git_repo(tmp_path / "repo", MONOREPO, exclude="# local\n*.local\n")


def bundle_files(root: Path) -> set[str]:
    rules = folder_rules(root, gitignore=True)
    return {e.relpath for e in list_files(root, rules) if e.type == FILE}


def test_bundle_lists_what_git_lists(monorepo: Path) -> None:
    api = monorepo / "services" / "api"
    docker_or_standard = {"debug.log", "__pycache__/app.cpython-311.pyc"}
    assert bundle_files(api) == git_listing(api) - docker_or_standard
    assert bundle_files(api) == {
        ".dockerignore",
        ".gitignore",
        "app.py",
        "images.py",
        "other/local/z.py",
        "pyproject.toml",
        "sub/.gitignore",
        "sub/keep.secret",
        "sub/mod.py",
        "top.txt",
    }


def test_env_file_stays_out_of_the_staged_context(monorepo: Path) -> None:
    image = load_image(monorepo / "services" / "api" / "images.py")
    listing = render_dockerfile(image, hash_image(image)).listing()
    assert {"layers/0/app.py", "layers/0/sub/keep.secret"} <= set(listing)
    leaked = [p for p in listing if p.endswith((".env", ".secret", ".local")) and "keep" not in p]
    assert leaked == []


def test_ignore_files_of_names_every_git_file(monorepo: Path) -> None:
    api = monorepo / "services" / "api"
    extra = monorepo / "extra.dockerignore"
    assert ignore_files_of(api, [extra], gitignore=True) == (
        api / ".dockerignore",
        api / ".gitignore",
        monorepo / ".git" / "info" / "exclude",
        monorepo / ".gitignore",
        monorepo / "services" / ".gitignore",
        api / "sub" / ".gitignore",  # not build/.gitignore: git never reads it
        extra,
    )


def test_edits_to_an_ancestor_gitignore_change_the_bundle(monorepo: Path) -> None:
    api = monorepo / "services" / "api"
    (monorepo / ".gitignore").write_text("*.secret\n")  # no longer ignores .env
    assert ".env" in bundle_files(api)
    (monorepo / ".git" / "info" / "exclude").write_text("app.py\n")
    assert "app.py" not in bundle_files(api)
    assert bundle_files(api) == git_listing(api) - {"debug.log", "__pycache__/app.cpython-311.pyc"}


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        pytest.param("services/api/.dockerignore", True, id="own-dockerignore"),
        pytest.param("services/api/.gitignore", True, id="own-gitignore"),
        pytest.param("services/api/new/deep/.gitignore", True, id="new-nested-gitignore"),
        pytest.param("services/.gitignore", True, id="ancestor"),
        pytest.param(".gitignore", True, id="repository-root"),
        pytest.param(".git/info/exclude", True, id="info-exclude"),
        pytest.param("services/web/.gitignore", False, id="sibling-project"),
        pytest.param("services/api/app.py", False, id="plain-file"),
        pytest.param("extra.dockerignore", True, id="extra-file"),
    ],
)
def test_is_rules_input(monorepo: Path, rel: str, expected: bool) -> None:
    api = monorepo / "services" / "api"
    extra = [monorepo / "extra.dockerignore"]
    assert is_rules_input(api, monorepo / rel, extra, gitignore=True) is expected


def test_is_rules_input_without_gitignore(monorepo: Path) -> None:
    api = monorepo / "services" / "api"
    assert not is_rules_input(api, monorepo / ".gitignore")
    assert is_rules_input(api, api / ".dockerignore")


def test_worktree_git_file_finds_the_shared_info_exclude(tmp_path: Path) -> None:
    common = tmp_path / "main.git"
    (common / "worktrees" / "wt").mkdir(parents=True)
    (common / "worktrees" / "wt" / "commondir").write_text("../..\n")
    (common / "info").mkdir()
    (common / "info" / "exclude").write_text("*.tmp\n")
    make_tree(tmp_path / "wt", {"app/x.tmp": "", "app/x.py": ""})
    (tmp_path / "wt" / ".git").write_text(f"gitdir: {common / 'worktrees' / 'wt'}\n")
    app = tmp_path / "wt" / "app"
    assert bundle_files(app) == {"x.py"}
    assert common / "info" / "exclude" in ignore_files_of(app, gitignore=True)


def test_outside_a_repository_only_the_folder_gitignores_apply(tmp_path: Path) -> None:
    make_tree(tmp_path, {"app/.gitignore": "*.tmp\n", "app/a/.gitignore": "x\n", "app/a/x": ""})
    make_tree(tmp_path, {".gitignore": "*.py\n", "app/keep.py": "", "app/b.tmp": ""})
    app = tmp_path / "app"
    assert bundle_files(app) == {".gitignore", "a/.gitignore", "keep.py"}


# -- prefixed rules: an ancestor's patterns seen from the bundle root ---------------------

_NAMES = st.sampled_from(["a", "b", "api", "x.py", "y.env", "local"])
_PATTERNS = st.sampled_from(
    ["a", "/a", "a/", "api/b", "/services/api/a", "*.py", "**/b", "a/**", "*/b", "x.py", "*"]
)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.tuples(st.booleans(), _PATTERNS), max_size=4),
    path=st.lists(_NAMES, min_size=1, max_size=4),
    is_dir=st.booleans(),
)
def test_prefix_matches_the_full_path(
    lines: list[tuple[bool, str]], path: list[str], is_dir: bool
) -> None:
    text = [f"!{p}" if negated else p for negated, p in lines]
    rel = "/".join(path)
    prefixed = IgnoreRules.from_lines(text, syntax="git", prefix="services/api")
    full = IgnoreRules.from_lines(text, syntax="git")
    expected = full.is_ignored(f"services/api/{rel}", is_dir=is_dir)
    assert prefixed.is_ignored(rel, is_dir=is_dir) is expected
    matcher = prefixed.walker()
    folder = matcher.folder("/".join(path[:-1]))
    assert matcher.child(folder, path[-1], rel, is_dir=is_dir)[0] is expected


@pytest.mark.parametrize(
    ("lines", "reldir", "expected"),
    [
        pytest.param(["a/", "!/services/api/a/keep"], "a", False, id="anchored-exception-below"),
        pytest.param(["a/", "!/services/web/a/keep"], "a", True, id="anchored-elsewhere"),
        pytest.param(["a/", "!keep"], "a", False, id="unanchored-exception"),
        pytest.param(["a/", "!/services/apix/a/k"], "a", True, id="sibling-with-prefix"),
    ],
)
def test_prefixed_can_prune(lines: list[str], reldir: str, expected: bool) -> None:
    rules = IgnoreRules.from_lines(lines, syntax="git", prefix="services/api")
    assert rules.can_prune(reldir) is expected


def test_prefix_shows_in_patterns_and_equality() -> None:
    rules = IgnoreRules.from_lines(["*.env"], syntax="git", prefix="services/api")
    assert rules.patterns == ("../..: *.env",)
    assert rules != IgnoreRules.from_lines(["*.env"], syntax="git", prefix="api")


# -- against real git ---------------------------------------------------------------------

_GIT_PATTERNS = st.sampled_from(
    ["a", "/a", "a/", "b/c", "/b", "*.py", "**/c", "a/**", "*/c", "c.py", "/api/a", "api/"]
)
_FILES = [
    "a",
    "c.py",
    "b/c",
    "b/c.py",
    "a2/a",
    "sub/b/c",
    "sub/a/c.py",
    "sub/x.py",
    "api/a",
    "deep/sub/b",
]


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    top=st.lists(_GIT_PATTERNS, max_size=3),
    root=st.lists(_GIT_PATTERNS, max_size=3),
    nested=st.lists(_GIT_PATTERNS, max_size=3),
)
def test_agrees_with_git_ls_files(
    tmp_path_factory: pytest.TempPathFactory, top: list[str], root: list[str], nested: list[str]
) -> None:
    """Patterns without "!" (where git and pathspec agree) in three files at three levels."""
    repo = tmp_path_factory.mktemp("repo")
    files = {f"svc/api/{f}": "" for f in _FILES}
    files |= {".gitignore": "\n".join(top), "svc/api/.gitignore": "\n".join(root)}
    files |= {"svc/api/sub/.gitignore": "\n".join(nested), "svc/api/pyproject.toml": ""}
    git_repo(repo, files)
    api = repo / "svc" / "api"
    assert bundle_files(api) == git_listing(api)
