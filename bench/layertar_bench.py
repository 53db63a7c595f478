"""Layer blobs written by render/layertar.py against stdlib tarfile + gzip, per compressor.

    python bench/layertar_bench.py                 # 5,000 files (~20 MB), 5 cold / 9 edits
    python bench/layertar_bench.py --files 200 --json
    python bench/layertar_bench.py --dir /usr/lib/python3.11/email   # a copy of a real tree

Every row writes the layer of the same tree (hash_bench's generated source tree, filtered
by its .dockerignore). The baseline is the plain way in the same run: ``tarfile`` in
``w:gz`` mode (gzip level 9, its default) adding each file with normalised metadata.
The compressor rows swap the deflate module layertar uses (the bench only: isal.isal_zlib,
zlib_ng.zlib_ng and stdlib zlib share one API).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import random
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from isal import isal_zlib

try:
    from zlib_ng import zlib_ng
except ImportError:  # pip install zlib-ng; the rows then say "not installed"
    zlib_ng = None

sys.path.insert(0, str(Path(__file__).parent))
from hash_bench import age, generate_tree

from imaged.digest.cache import DigestCache
from imaged.digest.files import FILE, folder_rules
from imaged.digest.trees import TreeIndex
from imaged.render import layertar
from imaged.render.layertar import LayerEntry, MemberCache, tree_entries, write_layers

COMPRESSORS: list[tuple[str, ModuleType | None, int]] = [
    ("isal level 1", isal_zlib, 1),
    ("isal level 2 (default)", isal_zlib, 2),
    ("isal level 3", isal_zlib, 3),
    ("zlib-ng level 1", zlib_ng, 1),
    ("zlib-ng level 6", zlib_ng, 6),
    ("stdlib zlib level 1", zlib, 1),
    ("stdlib zlib level 6", zlib, 6),
]
NO_SPLIT = 1 << 62
NOT_INSTALLED = "not installed (pip install zlib-ng)"


def stream_rates(data: bytes, repeats: int = 3) -> list[dict[str, Any]]:
    """Each compressor over ``data`` as one gzip stream: MB/s of input and the ratio
    (median seconds of ``repeats``); a missing module's row says it is not installed."""
    rows: list[dict[str, Any]] = []
    for name, module, level in COMPRESSORS:
        if module is None:
            rows.append({"row": name, "error": NOT_INSTALLED})
            continue
        seconds, size = median_of(functools.partial(gzip_stream, module, level, data), repeats)
        rows.append({"row": name, "mb_s": len(data) / seconds / 1e6, "ratio": size / len(data)})
    return rows


def gzip_stream(module: ModuleType, level: int, data: bytes) -> int:
    deflate = module.compressobj(level, module.DEFLATED, 31)
    return len(deflate.compress(data)) + len(deflate.flush())


def median_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def baseline(entries: list[LayerEntry], level: int = 9) -> int:
    """stdlib tarfile + gzip of the same entries (normalised as layertar normalises them)."""
    return len(plain_tar(entries, "w:gz", compresslevel=level))


def plain_tar(entries: list[LayerEntry], mode: str = "w", **options: Any) -> bytes:
    """The entries through stdlib tarfile (``mode`` "w": no compression)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode, **options) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode, info.mtime, info.uname, info.gname = e.mode, e.mtime, "", ""
            if e.type == FILE:
                assert e.source is not None
                info.size = e.size
                with open(e.source, "rb") as f:
                    tar.addfile(info, f)
            else:
                info.type = tarfile.DIRTYPE if e.type == "d" else tarfile.SYMTYPE
                info.linkname = e.target or ""
                tar.addfile(info)
    return out.getvalue()


def cold_write(entries: list[LayerEntry]) -> list[layertar.LayerBlob]:
    return write_layers(entries, split_bytes=NO_SPLIT, cache=MemberCache())


def use(module: ModuleType, level: int) -> None:
    vars(layertar).update(isal_zlib=module, LEVEL=level)
    layertar.end_member.cache_clear()


def edit_once(index: TreeIndex, files: list[str], rng: random.Random, n: int) -> None:
    rel = rng.choice(files)
    with open(index.root / rel, "ab") as f:
        f.write(f"# edit {n}\n".encode())
    index.update([rel])


def warm_edit(
    index: TreeIndex, files: list[str], split: int, repeats: int
) -> tuple[float, int, int, int]:
    """Median seconds of write_layers after a one-file edit with a warm cache; the bytes
    of the layers that changed (median), the compressed size, members compressed per edit."""
    cache = MemberCache()
    blobs = write_layers(tree_entries(index, "/app"), split_bytes=split, cache=cache)
    rng, times, moved, compressed = random.Random(5), [], [], []
    for n in range(repeats):
        edit_once(index, files, rng, n)
        entries = tree_entries(index, "/app")
        before = cache.compressed
        start = time.perf_counter()
        new = write_layers(entries, split_bytes=split, cache=cache)
        times.append(time.perf_counter() - start)
        old = {b.digest for b in blobs}
        moved.append(sum(b.size for b in new if b.digest not in old))
        compressed.append(cache.compressed - before)
        blobs = new
    total = sum(b.size for b in blobs)
    return statistics.median(times), int(statistics.median(moved)), total, max(compressed)


def diff_id_costs(entries: list[LayerEntry], repeats: int) -> dict[str, float]:
    """What the diff_id of a changed layer costs for its unchanged files: reading and
    hashing them again, against inflating their cached members (what layertar does)."""
    members = [layertar.compress_member(e.header) for e in entries if e.type != FILE]
    files = [e for e in entries if e.type == FILE]
    cache = MemberCache()
    layertar.write_layer(files, cache)
    cached = [m.data for m in cache._members.values()]

    def reread() -> None:
        h = hashlib.sha256()
        for e in files:
            assert e.source is not None
            h.update(Path(e.source).read_bytes())

    def inflate() -> None:
        h = hashlib.sha256()
        for m in cached + members:
            h.update(isal_zlib.decompress(m, 31))

    def hash_only() -> None:
        h = hashlib.sha256()
        for m in cached:
            h.update(m)

    return {
        "re-read + sha256 every file": median_of(reread, repeats)[0],
        "inflate every cached member + sha256": median_of(inflate, repeats)[0],
        "sha256 of the compressed stream only": median_of(hash_only, repeats)[0],
    }


def make_source(tmp: Path, n_files: int, copy_of: Path | None) -> Path:
    """hash_bench's generated tree, or a copy of a real one (edits must not touch it)."""
    root = tmp / "src"
    if copy_of is not None:
        shutil.copytree(copy_of, root, symlinks=True)
    else:
        generate_tree(root, n_files)
    age(root)
    return root


def run(
    n_files: int, cold_repeats: int, edit_repeats: int, split: int, copy_of: Path | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="layertar-bench-") as tmp:
        root = make_source(Path(tmp), n_files, copy_of)
        index = TreeIndex.build(root, folder_rules(root), DigestCache())
        entries = tree_entries(index, "/app")
        files = [e.relpath for e in index.listing() if e.type == FILE]
        raw = sum(e.tar_size for e in entries) + 1024
        base_s, base_size = median_of(lambda: baseline(entries), cold_repeats)
        rows: list[dict[str, Any]] = [
            {"row": "baseline: tarfile w:gz (gzip -9)", "cold_s": base_s, "size": base_size}
        ]
        six_s, six_size = median_of(functools.partial(baseline, entries, 6), cold_repeats)
        rows.append({"row": "tarfile w:gz, compresslevel=6", "cold_s": six_s, "size": six_size})
        for name, module, level in COMPRESSORS:
            if module is None:
                rows.append({"row": name, "error": NOT_INSTALLED})
                continue
            use(module, level)
            cold_s, blobs = median_of(
                functools.partial(cold_write, entries),
                cold_repeats,
            )
            edit_s, _, _, members = warm_edit(index, files, NO_SPLIT, edit_repeats)
            entries = tree_entries(index, "/app")
            rows.append(
                {
                    "row": name,
                    "cold_s": cold_s,
                    "size": blobs[0].size,
                    "edit_s": edit_s,
                    "members_per_edit": members,
                }
            )
        use(isal_zlib, 2)
        split_s, moved, total, members = warm_edit(index, files, split, edit_repeats)
        parts = len(write_layers(tree_entries(index, "/app"), split_bytes=split))
        costs = diff_id_costs(tree_entries(index, "/app"), cold_repeats)
        stream = stream_rates(plain_tar(tree_entries(index, "/app")), cold_repeats)
    return {
        "files": len(files),
        "tar_bytes": raw,
        "rows": rows,
        "split": {
            "split_bytes": split,
            "layers": parts,
            "edit_s": split_s,
            "uploaded_bytes_median": moved,
            "compressed_bytes": total,
            "members_per_edit": members,
        },
        "diff_id_costs_s": costs,
        "stream": stream,
    }


def show(result: dict[str, Any]) -> None:
    base = result["rows"][0]
    print(f"{result['files']} files, {result['tar_bytes'] / 1e6:.1f} MB of tar")
    print(
        f"{'row':36} {'cold s':>8} {'x base':>7} {'MB':>7} {'ratio':>6} {'edit s':>8} {'x base':>7}"
    )
    for row in result["rows"]:
        if "error" in row:
            print(f"{row['row']:36} {row['error']}")
            continue
        edit = row.get("edit_s")
        print(
            f"{row['row']:36} {row['cold_s']:8.3f} {row['cold_s'] / base['cold_s']:7.2f} "
            f"{row['size'] / 1e6:7.2f} {row['size'] / result['tar_bytes']:6.3f} "
            + (f"{edit:8.4f} {edit / base['cold_s']:7.4f}" if edit is not None else "")
        )
    s = result["split"]
    print(
        f"split at {s['split_bytes'] >> 20} MiB: {s['layers']} layers; one-file edit "
        f"{s['edit_s']:.4f} s, uploads {s['uploaded_bytes_median'] / 1e3:.1f} kB of "
        f"{s['compressed_bytes'] / 1e6:.2f} MB ({s['uploaded_bytes_median'] / s['compressed_bytes']:.1%}), "
        f"{s['members_per_edit']} member(s) compressed"
    )
    for name, seconds in result["diff_id_costs_s"].items():
        print(f"  diff_id of a whole layer's unchanged files: {name}: {seconds:.3f} s")
    print("the whole tar as one gzip stream:")
    show_stream(result["stream"])


def show_stream(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        text = row.get("error") or f"{row['mb_s']:7.1f} MB/s  ratio {row['ratio']:.3f}"
        print(f"  {row['row']:34} {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--cold-repeats", type=int, default=5)
    parser.add_argument("--edit-repeats", type=int, default=9)
    parser.add_argument("--split-bytes", type=int, default=8 << 20)
    parser.add_argument("--dir", type=Path, help="bench a copy of this tree instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.files, args.cold_repeats, args.edit_repeats, args.split_bytes, args.dir)
    show(result)
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
