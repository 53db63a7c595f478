"""The build uses the inputs as they were read for the digest, never a second reading."""

from __future__ import annotations

from pathlib import Path

from imaged import Image
from imaged.dockerfile import base_reference, render_dockerfile
from imaged.hashing import hash_image

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
