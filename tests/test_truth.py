"""The tag tells the truth: incremental digests equal fresh ones under random mutation
sequences, and (with the real engine) the image under each new tag holds exactly the tree."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from e2e_support import run_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from truth_support import (
    Campaign,
    ImageState,
    Variant,
    derived_expect,
    mutate,
    plain_expect,
    read_image,
    seed_tree,
)

from imaged import Image, build
from imaged.config import load_settings
from imaged.daemon.tracker import ImageTracker
from imaged.digest.cache import DigestCache
from imaged.digest.files import folder_rules
from imaged.digest.image_digest import hash_image
from imaged.digest.trees import TreeIndex


def fresh_index(root: Path, rules: Any) -> TreeIndex:
    return TreeIndex.build(root, rules, DigestCache())


@pytest.mark.parametrize(
    "name", ["..data/key", "..double", "...", "..data/..inner", "b b/é ü", "日本/..x"]
)
def test_an_edit_below_a_dot_dot_name_moves_the_incremental_digest(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("one")
    rules = folder_rules(tmp_path)
    index = fresh_index(tmp_path, rules)
    before = index.digest
    path.write_text("two!")
    assert index.update([name]) == {name}
    assert index.digest != before
    assert index.digest == fresh_index(tmp_path, rules).digest


def test_paths_that_leave_the_root_are_still_refused(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    index = fresh_index(tmp_path, folder_rules(tmp_path))
    assert index.update(["..", "../a", "../x/y"]) == set()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), steps=st.integers(min_value=1, max_value=12))
def test_incremental_digests_equal_fresh_ones(rng: random.Random, steps: int) -> None:
    """TreeIndex.update, TreeIndex.refresh and the daemon's tracker, after each mutation,
    give the digest and file list a fresh hash gives."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "src"
        root.mkdir()
        seed_tree(root)
        rules = folder_rules(root)
        named, walked = fresh_index(root, rules), fresh_index(root, rules)
        image = Image.from_base("r:1").with_source_folder(root, dst="/app").clone(name="t")
        tracker = ImageTracker(DigestCache())
        tracker.set_images({"t": image})
        for _ in range(steps):
            mutation = mutate(rng, root)
            rels = [p.relative_to(root).as_posix() for p in mutation.paths if p != root]
            named.update(rels)
            walked.refresh()
            tracker.apply_changes(mutation.paths)
            rebuilt = fresh_index(root, rules)
            assert named.file_digests() == rebuilt.file_digests(), str(mutation)
            assert named.digest == rebuilt.digest, str(mutation)
            assert walked.digest == rebuilt.digest, str(mutation)
            fresh = hash_image(image, DigestCache())
            assert tracker.digest_of("t").digest == fresh.digest, str(mutation)


# -- with the real engine ---------------------------------------------------------------

SEED, MUTATIONS = 3, 8


@pytest.mark.timeout(300)
def test_a_short_truth_campaign_finds_no_lie(infra: Any, tmp_path: Path) -> None:
    """Seeded mutations (a same-size edit among them), each built for real: every new tag's
    image holds the tree, and no tag stays while the tree's content moved."""
    tree = tmp_path / "tree"
    tree.mkdir()
    seed_tree(tree)
    run = run_id()
    plain = (
        Image.from_base(infra.debian_base)
        .clone(registry=infra.registry, name=f"truth-{run}", extendable=True)
        .with_source_folder(tree, dst="/app", copy_contents_only=True)
    )
    derived = plain.with_commands("cp -a /app /derived").clone(name=f"truth-derived-{run}")
    opts = dataclasses.replace(
        load_settings(), state_dir=tmp_path / "state", docker_cli=infra.docker_cli
    )
    env = infra.docker_env()

    def build_one(image: Image) -> tuple[str, str]:
        result = build(image, settings=opts)
        return result.tag, result.uri

    def read(uri: str, paths: tuple[str, ...]) -> ImageState:
        return read_image(infra.docker_cli, uri, paths, env)

    variants = [
        Variant(plain, ("/app",), plain_expect),
        Variant(derived, ("/app", "/derived"), derived_expect),
    ]
    campaign = Campaign(tree, variants, build_one, read)
    rng = random.Random(SEED)
    kinds = []
    try:
        campaign.check("the seeded tree")
        for _ in range(MUTATIONS):
            mutation = mutate(rng, tree)
            kinds.append(mutation.kind)
            campaign.figures.tried += 1
            campaign.check(str(mutation))
    finally:
        subprocess.run([infra.docker_cli, "rmi", *campaign.uris], env=env, capture_output=True)
    assert "edit same size" in kinds  # the edit issue 7 is about
    figures = campaign.figures
    assert (figures.false_hits, figures.stale) == (0, 0), "\n".join(figures.problems)
    assert figures.new_tags >= 2 * kinds.count("edit same size")
