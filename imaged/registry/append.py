"""Fast path: a pushed *stem* image plus new tail layers -> a new image, pushed under a new tag.

What is written, so the result reads like BuildKit's and the same inputs give the same digests:

- **Config**: the stem's config JSON with the tail's diff_ids appended to ``rootfs.diff_ids``,
  its history entries appended to ``history`` (``{"created_by", "comment", "empty_layer"}``;
  ``created`` only when given, so no clock reaches the digest), ``Env`` and ``WorkingDir`` set
  as the Dockerfile's ENV and WORKDIR would (:func:`apply_env`, :func:`resolve_workdir`) and
  ``Labels`` merged with the edit's (the caller passes ``dev.imaged.digest``). Everything else
  (Entrypoint, Cmd, User, ``created``, ...) is the stem's. Encoded with sorted keys and no
  spaces (``json.dumps(sort_keys=True, separators=(",", ":"))``): deterministic, not RFC 8785.
- **Manifest**: the stem's, its media type kept, with the new config descriptor and the tail's
  layers appended; a Docker v2 stem gets ``application/vnd.docker.image.rootfs.diff.tar.gzip``
  layers, an OCI one ``application/vnd.oci.image.layer.v1.tar+gzip``. Same encoding.
- **Index** (an OCI index or Docker manifest list stem): the same tail appended to every
  platform's manifest, each pushed by digest, and a new index naming them (its other fields
  kept). BuildKit's attestation manifests (``vnd.docker.reference.type``) name the old
  manifests, so they are left out.

Push order: every blob the new manifests name (a stem blob is taken as there when the target
is the stem's repository; else HEAD, skipped when there; else a stem blob is mounted from the
stem's repository on the same registry, or streamed from it; a tail blob is uploaded), then
the configs, then the platform
manifests by digest, and the manifest or index under the target tag LAST: a push cut off
midway leaves no tag naming a missing blob.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from imaged.errors import RegistryError
from imaged.registry.client import BlobSource, Existence, RegistryClient
from imaged.registry.ref import ImageRef

__all__ = [
    "BlobPush",
    "ConfigEdit",
    "HistoryEntry",
    "NewLayer",
    "PushedImage",
    "StemImage",
    "append_layers",
    "apply_env",
    "buildkit_copy",
    "edit_config",
    "encode_json",
    "resolve_workdir",
]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
BUILDKIT_COMMENT = "buildkit.dockerfile.v0"
LAYER_MEDIA_TYPES = {DOCKER_MANIFEST: DOCKER_LAYER, OCI_MANIFEST: OCI_LAYER}
INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_LIST)
STEM_MEDIA_TYPES = (*INDEX_MEDIA_TYPES, *LAYER_MEDIA_TYPES)
_ATTESTATION = "vnd.docker.reference.type"

Json = dict[str, Any]


@dataclass(frozen=True)
class NewLayer:
    """One tail layer: its compressed blob (bytes, or a function streaming them), the blob's
    digest and size, the digest of its uncompressed tar (diff_id) and its history text."""

    digest: str
    size: int
    diff_id: str
    data: BlobSource = field(repr=False)
    created_by: str
    media_type: str | None = None  # None: the stem's gzip layer type


@dataclass(frozen=True)
class HistoryEntry:
    """One ``history`` entry of the config, as BuildKit writes it."""

    created_by: str
    empty_layer: bool = False
    comment: str = BUILDKIT_COMMENT
    created: str | None = None

    def to_json(self) -> Json:
        entry: Json = {"created_by": self.created_by, "comment": self.comment}
        if self.created is not None:
            entry["created"] = self.created
        return entry | ({"empty_layer": True} if self.empty_layer else {})


@dataclass(frozen=True)
class ConfigEdit:
    """What the tail changes in the config besides its layers.

    `env` pairs apply in order as ENV does; `workdir` as WORKDIR; `labels` are set over the
    stem's. `history`, when given, is the tail's whole history in Dockerfile order and must
    hold one non-empty entry per layer; when empty, each layer's `created_by` is used, then
    one empty entry each for ENV, WORKDIR and LABEL when they are set.
    """

    env: Sequence[tuple[str, str]] = ()
    workdir: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    history: Sequence[HistoryEntry] = ()
    created: str | None = None


@dataclass(frozen=True)
class BlobPush:
    """How one blob reached the target repository."""

    digest: str
    size: int
    how: Literal["present", "mounted", "uploaded", "copied"]


@dataclass(frozen=True)
class PushedImage:
    """The pushed image: the tag's manifest (or index) digest, each platform manifest's
    digest (the same one for a single-platform image), and what each blob took."""

    ref: ImageRef
    digest: str
    media_type: str
    manifests: tuple[str, ...]
    blobs: tuple[BlobPush, ...]

    @property
    def uploaded_bytes(self) -> int:
        """Bytes sent as blob uploads (mounts and blobs already there send none)."""
        return sum(b.size for b in self.blobs if b.how in ("uploaded", "copied"))


@dataclass(frozen=True)
class StemImage:
    """The stem's manifest (or index) as the caller already read it, and the configs it
    read by digest: :func:`append_layers` then reads neither again."""

    media_type: str
    body: bytes
    configs: Mapping[str, Json] = field(default_factory=dict)


def buildkit_copy(src: str, dest: str) -> str:
    """The ``created_by`` BuildKit writes for a COPY.

    >>> buildkit_copy("layers/3/", "/app/")
    'COPY layers/3/ /app/ # buildkit'
    """
    return f"COPY {src} {dest} # buildkit"


def encode_json(value: object) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8.

    >>> encode_json({"b": 1, "a": [1, 2]})
    b'{"a":[1,2],"b":1}'
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def apply_env(env: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[str]:
    """ENV's rule: a name already set is replaced where it stands, a new one is appended.

    >>> apply_env(["PATH=/bin", "A=1"], [("A", "2"), ("B", "3")])
    ['PATH=/bin', 'A=2', 'B=3']
    """
    out = list(env)
    for name, value in pairs:
        names = [item.partition("=")[0] for item in out]
        entry = f"{name}={value}"
        if name in names:
            out[names.index(name)] = entry
        else:
            out.append(entry)
    return out


def resolve_workdir(current: str, requested: str) -> str:
    """WORKDIR's rule: a relative path joins the previous one; the result is cleaned.

    >>> resolve_workdir("/app", "src/../lib/")
    '/app/lib'
    """
    joined = posixpath.normpath(posixpath.join("/", current or "/", requested))
    return "/" + joined.lstrip("/")


def tail_history(layers: Sequence[NewLayer], edit: ConfigEdit) -> list[HistoryEntry]:
    """The history entries the tail adds (see :class:`ConfigEdit`); checks their count."""
    entries = list(edit.history) or _default_history(layers, edit)
    with_layer = sum(not e.empty_layer for e in entries)
    if with_layer != len(layers):
        raise ValueError(
            f"the tail's history has {with_layer} entries with a layer for {len(layers)} layers"
        )
    return entries


def _default_history(layers: Sequence[NewLayer], edit: ConfigEdit) -> list[HistoryEntry]:
    entries = [HistoryEntry(layer.created_by, created=edit.created) for layer in layers]
    texts = []
    if edit.env:
        texts.append("ENV " + " ".join(f"{k}={v}" for k, v in edit.env))
    if edit.workdir is not None:
        texts.append(f"WORKDIR {edit.workdir}")
    if edit.labels:
        texts.append("LABEL " + " ".join(f"{k}={v}" for k, v in edit.labels.items()))
    return entries + [HistoryEntry(t, empty_layer=True, created=edit.created) for t in texts]


def edit_config(config: Json, layers: Sequence[NewLayer], edit: ConfigEdit) -> Json:
    """The stem's config with the tail applied (a new object; `config` is not changed)."""
    new = copy.deepcopy(config)
    rootfs = new.get("rootfs") or {"type": "layers"}
    rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), *(la.diff_id for la in layers)]
    new["rootfs"] = rootfs
    history = [h.to_json() for h in tail_history(layers, edit)]
    new["history"] = [*(new.get("history") or []), *history]
    inner = new.get("config") or {}
    if edit.env:
        inner["Env"] = apply_env(inner.get("Env") or [], edit.env)
    if edit.workdir is not None:
        inner["WorkingDir"] = resolve_workdir(inner.get("WorkingDir") or "", edit.workdir)
    if edit.labels:
        inner["Labels"] = {**(inner.get("Labels") or {}), **edit.labels}
    new["config"] = inner
    if edit.created is not None:
        new["created"] = edit.created
    return new


async def append_layers(
    client: RegistryClient,
    stem_ref: ImageRef | str,
    target_ref: ImageRef | str,
    layers: Sequence[NewLayer],
    config_edit: ConfigEdit,
    *,
    stem_image: StemImage | None = None,
    done: Sequence[BlobPush] = (),
    fresh_configs: bool = False,
) -> PushedImage:
    """Append `layers` and `config_edit` to the pushed image `stem_ref`; push the result as
    `target_ref` (a tag). See the module docstring for what is written and in which order.

    `stem_image` is the stem as the caller read it (not fetched again); `done` are blobs
    the caller already put into the target (not checked again); `fresh_configs` uploads
    the new configs without asking first whether the registry has them (a config naming
    a new layer is new).

    >>> async def main(client: RegistryClient) -> PushedImage:
    ...     layer = NewLayer(digest, size, diff_id, blob, buildkit_copy("layers/3/", "/app/"))
    ...     return await append_layers(client, "reg/app:stem", "reg/app:v2", [layer], ConfigEdit())
    """
    stem, target = _ref(stem_ref), _ref(target_ref)
    tail_history(layers, config_edit)  # a bad count fails before anything is pushed
    if stem_image is None:
        media_type, body, read = await client.get_manifest(stem, accept=STEM_MEDIA_TYPES)
        stem_image = StemImage(media_type, body)
        if read:  # pinned: a tag re-pushed meanwhile cannot mix two stems
            stem = dataclasses.replace(stem, tag=None, digest=read)
    media_type, body = stem_image.media_type, stem_image.body
    pusher = _Pusher(client, stem, target, layers, dict(stem_image.configs), fresh_configs)
    pusher.done.update((b.digest, b) for b in done)
    if media_type in INDEX_MEDIA_TYPES:
        return await _append_index(pusher, media_type, _parse(stem, body), config_edit)
    manifest_body = await _append_manifest(pusher, stem, media_type, body, config_edit)
    digest = await client.put_manifest(target, media_type, manifest_body)
    return pusher.result(digest, media_type, (digest,))


@dataclass
class _Pusher:
    """Puts blobs into the target repository once each, remembering how."""

    client: RegistryClient
    stem: ImageRef
    target: ImageRef
    layers: Sequence[NewLayer]
    configs: dict[str, Json] = field(default_factory=dict)
    fresh_configs: bool = False
    done: dict[str, BlobPush] = field(default_factory=dict)

    async def ensure(
        self, digest: str, size: int, data: BlobSource | None, *, ask: bool = True
    ) -> None:
        """Make blob `digest` present in the target; `data` None: it is the stem's; `ask`
        False: upload `data` without a HEAD first."""
        if digest not in self.done:
            how = await self._push(digest, size, data, ask)
            self.done[digest] = BlobPush(digest, size, how)

    async def config(self, ref: ImageRef, digest: str) -> Json:
        if digest not in self.configs:
            self.configs[digest] = _parse(ref, await self.client.get_blob(ref, digest))
        return self.configs[digest]

    async def _push(
        self, digest: str, size: int, data: BlobSource | None, ask: bool = True
    ) -> Literal["present", "mounted", "uploaded", "copied"]:
        if data is None and self.stem.name == self.target.name:
            return "present"  # the stem's manifest in this repository keeps its blobs
        if ask and await self.client.blob_exists(self.target, digest) is Existence.EXISTS:
            return "present"
        if data is not None:
            await self.client.upload_blob(self.target, digest, data, size)
            return "uploaded"
        if self._can_mount() and await self.client.mount_blob(
            self.target, digest, self.stem.repository
        ):
            return "mounted"
        stream = self.client.stream_blob(self.stem, digest)
        await self.client.upload_blob(self.target, digest, stream, size)
        return "copied"

    def _can_mount(self) -> bool:
        same_registry = self.stem.registry == self.target.registry
        return same_registry and self.stem.repository != self.target.repository

    def result(self, digest: str, media_type: str, manifests: tuple[str, ...]) -> PushedImage:
        return PushedImage(self.target, digest, media_type, manifests, tuple(self.done.values()))


async def _append_manifest(
    pusher: _Pusher, ref: ImageRef, media_type: str, body: bytes, edit: ConfigEdit
) -> bytes:
    """Push every blob of the new manifest (layers, then config); return its bytes."""
    manifest = _parse(ref, body)
    config_descriptor = manifest.get("config") or {}
    if "digest" not in config_descriptor:
        raise RegistryError(f"manifest {ref} on registry {ref.registry} names no config")
    config = await pusher.config(ref, config_descriptor["digest"])
    for layer in manifest.get("layers") or []:
        await pusher.ensure(layer["digest"], layer["size"], None)
    descriptors = [_layer_descriptor(ref, media_type, la) for la in pusher.layers]
    for la in pusher.layers:
        await pusher.ensure(la.digest, la.size, la.data)
    config_body = encode_json(edit_config(config, pusher.layers, edit))
    config_digest = _digest(config_body)
    await pusher.ensure(config_digest, len(config_body), config_body, ask=not pusher.fresh_configs)
    manifest["config"] = config_descriptor | {"digest": config_digest, "size": len(config_body)}
    manifest["layers"] = [*(manifest.get("layers") or []), *descriptors]
    return encode_json(manifest)


async def _append_index(
    pusher: _Pusher, media_type: str, index: Json, edit: ConfigEdit
) -> PushedImage:
    children: list[Json] = []
    for entry in index.get("manifests") or []:
        if (entry.get("annotations") or {}).get(_ATTESTATION):
            continue
        children.append(await _append_child(pusher, entry, edit))
    if not children:
        raise RegistryError(f"index {pusher.stem} names no image manifest to append to")
    index["manifests"] = children
    digest = await pusher.client.put_manifest(pusher.target, media_type, encode_json(index))
    return pusher.result(digest, media_type, tuple(c["digest"] for c in children))


async def _append_child(pusher: _Pusher, entry: Json, edit: ConfigEdit) -> Json:
    child = dataclasses.replace(pusher.stem, tag=None, digest=entry["digest"])
    types = tuple(LAYER_MEDIA_TYPES)
    media_type, body, _ = await pusher.client.get_manifest(child, accept=types)
    new_body = await _append_manifest(pusher, child, media_type, body, edit)
    digest = _digest(new_body)
    pushed = dataclasses.replace(pusher.target, tag=None, digest=digest)
    await pusher.client.put_manifest(pushed, media_type, new_body)
    return entry | {"mediaType": media_type, "digest": digest, "size": len(new_body)}


def _layer_descriptor(ref: ImageRef, manifest_type: str, layer: NewLayer) -> Json:
    expected = LAYER_MEDIA_TYPES[manifest_type]
    media_type = layer.media_type or expected
    if media_type.split(".")[:3] != expected.split(".")[:3]:
        raise ValueError(
            f"layer {layer.digest} has media type {media_type}, but stem {ref} is "
            f"{manifest_type}: its layers are {expected}"
        )
    return {"mediaType": media_type, "digest": layer.digest, "size": layer.size}


def _parse(ref: ImageRef, body: bytes) -> Json:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise RegistryError(
            f"registry {ref.registry} sent unreadable JSON for {ref}: {exc}"
        ) from None
    if not isinstance(value, dict):
        raise RegistryError(f"registry {ref.registry} sent JSON for {ref} that is no object")
    return value


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _ref(ref: ImageRef | str) -> ImageRef:
    return ref if isinstance(ref, ImageRef) else ImageRef.parse(ref)
