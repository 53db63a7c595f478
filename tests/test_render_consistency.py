"""The build uses the inputs as they were read for the digest, never a second reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaged import Image
from imaged.digest.image_digest import hash_image
from imaged.errors import SpecError
from imaged.render.dockerfile import base_reference, render_dockerfile

HEADER = '# /// script\n# dependencies = ["{dep}"]\n# ///\nprint("hi")\n'


def test_script_dependencies_come_from_the_hashed_header(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(HEADER.format(dep="attrs==23.2.0"))
    image = Image.from_uv_script(script, name="job")
    digest = hash_image(image)
    script.write_text(HEADER.format(dep="rich==13.9.4"))  # an edit after hashing
    dockerfile = render_dockerfile(image, digest).dockerfile
    assert "attrs==23.2.0" in dockerfile
    assert "rich" not in dockerfile


def test_a_users_dockerfile_is_built_as_it_was_hashed(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (tmp_path / "a").write_text("a")
    image = Image.from_dockerfile(tmp_path / "Dockerfile", registry=None, name="df")
    digest = hash_image(image)
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY a /changed\n")
    assert render_dockerfile(image, digest).dockerfile == "FROM scratch\nCOPY a /a\n"


def test_a_parent_is_named_by_the_tag_it_had_when_hashed(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("one")
    parent = (
        Image.from_base("debian:12")
        .with_source_file(tmp_path / "f.txt", "/")
        .clone(name="parent", registry="r.example:5000")
    )
    child = Image.from_base(parent).clone(name="child", registry="r.example:5000")
    digest = hash_image(child)
    first = base_reference(child, digest)
    (tmp_path / "f.txt").write_text("two")
    assert render_dockerfile(child, digest).dockerfile.startswith(f"FROM {first}\n")
    assert base_reference(child) != first  # a fresh hash sees the parent's new tag


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("-r base.txt", id="requirement"),
        pytest.param("--requirement=base.txt", id="requirement-long"),
        pytest.param("-c constraints.txt", id="constraint"),
        pytest.param("-e .", id="editable"),
        pytest.param("./vendor/pkg", id="local-path"),
        pytest.param("file:///tmp/x.whl", id="file-url"),
    ],
)
def test_a_requirements_file_that_names_other_files_is_refused(tmp_path: Path, line: str) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text(f"idna==3.7\n{line}\n")
    image = Image.from_base("debian:12").with_requirements(req).clone(name="r")
    with pytest.raises(SpecError, match=r"requirements\.txt:2: .* refers to another file") as info:
        hash_image(image)
    assert info.value.image == "r"
    assert "requirements" in str(info.value.layer)


def test_plain_requirements_with_options_and_comments_are_fine(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("# pinned\nidna==3.7  # comment\n--index-url https://pypi.org/simple\n\n")
    image = Image.from_base("debian:12").with_requirements(req).clone(name="r")
    assert hash_image(image).digest.startswith("sha256:")


def test_an_input_that_became_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").mkdir()
    image = Image.from_base("debian:12").with_requirements(tmp_path / "requirements.txt")
    with pytest.raises(SpecError, match=r"requirements\.txt.*cannot read"):
        hash_image(image.clone(name="r"))


def test_an_explicit_lock_file_is_the_one_staged_in_install_project_mode(tmp_path: Path) -> None:
    from imaged.render.context import stage_context

    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "1"\n')
    (project / "uv.lock").write_text("# the project's own lock\n")
    (tmp_path / "prod.lock").write_text("# the explicit lock\n")
    image = Image.from_base("debian:12").with_uv_project(
        project / "pyproject.toml",
        uvlock=tmp_path / "prod.lock",
        project_install_mode="install_project",
    )
    rendered = render_dockerfile(image.clone(name="p"))
    staged = tmp_path / "ctx" / "context"
    stage_context(rendered, staged)
    assert (staged / "inputs/0/project/uv.lock").read_text() == "# the explicit lock\n"
