"""An in-memory Distribution API behind httpx.MockTransport, with switches for the ways real
registries differ (no mounts, no monolithic uploads, forbidden media types, failures), and
helpers that make small images and layer blobs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from imaged.registry.append import (
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_LAYER,
    NewLayer,
    buildkit_copy,
    encode_json,
)
from imaged.registry.client import RegistryClient

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_PATH = re.compile(r"^/v2/(?P<repo>.+?)/(?P<kind>manifests|blobs/uploads|blobs)/?(?P<rest>[^/]*)$")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_blob(files: Mapping[str, bytes], *, mode: int = 0o644) -> tuple[bytes, str]:
    """A gzip layer holding `files` (parent folders included): (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = sorted({p for name in files for p in _parents(name)})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha256(tar_bytes)


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def new_layer(files: Mapping[str, bytes], dest: str = "/app/") -> NewLayer:
    blob, diff_id = layer_blob(files)
    return NewLayer(sha256(blob), len(blob), diff_id, blob, buildkit_copy("layers/1/", dest))


def image_manifest(media_type: str, config_body: bytes, blobs: list[bytes]) -> dict[str, object]:
    """A manifest of `media_type` naming the config and the gzip layer blobs."""
    docker = media_type == DOCKER_MANIFEST
    config_type = DOCKER_CONFIG if docker else OCI_CONFIG
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": config_type,
            "digest": sha256(config_body),
            "size": len(config_body),
        },
        "layers": [{"mediaType": layer_type, "digest": sha256(b), "size": len(b)} for b in blobs],
    }


@dataclass
class FakeRegistry:
    """A registry in a dict. `mounts`/`monolithic` off: it answers 202 to a mount and 405 to a
    PUT with a body; `forbid` holds manifest media types it refuses; `fail` may answer any
    request first (return None to let it through)."""

    host: str = "registry.example.com"
    mounts: bool = True
    monolithic: bool = True
    forbid: frozenset[str] = frozenset()
    forbid_status: int = 400
    absolute_location: bool = False
    check_blobs: bool = False  # refuse a manifest naming a blob it lacks, as distribution does
    fail: Callable[[httpx.Request], httpx.Response | None] = lambda request: None
    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)

    def client(self) -> RegistryClient:
        return RegistryClient(transport=httpx.MockTransport(self.handle))

    def ref(self, repo: str, tag: str) -> str:
        return f"{self.host}/{repo}:{tag}"

    def calls(self, method: str) -> list[str]:
        return [path for m, path in self.log if m == method]

    def put_image(self, repo: str, tag: str, media_type: str, config: dict[str, object]) -> str:
        """Store a one-layer image; return its manifest digest."""
        blob, diff_id = layer_blob({"stem.txt": b"stem"})
        config = {**config, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
        config_body = encode_json(config)
        self.blobs[(repo, sha256(blob))] = blob
        self.blobs[(repo, sha256(config_body))] = config_body
        manifest = image_manifest(media_type, config_body, [blob])
        body = json.dumps(manifest, indent=3).encode()
        self.manifests[(repo, tag)] = (media_type, body)
        self.manifests[(repo, sha256(body))] = (media_type, body)
        return sha256(body)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.log.append((request.method, request.url.path))
        body = await request.aread()
        failed = self.fail(request)
        if failed is not None:
            return failed
        match = _PATH.match(request.url.path)
        if match is None:
            return httpx.Response(200 if request.url.path == "/v2/" else 404)
        repo, kind, rest = match["repo"], match["kind"], match["rest"]
        if kind == "manifests":
            return self._manifest(request, repo, rest, body)
        if kind == "blobs":
            return self._blob(request, repo, rest)
        return self._upload(request, repo, rest, body)

    def _manifest(self, request: httpx.Request, repo: str, ref: str, body: bytes) -> httpx.Response:
        if request.method == "PUT":
            media_type = request.headers["content-type"]
            if media_type in self.forbid and self.forbid_status == 415:
                return httpx.Response(415, text="unsupported media type")
            if media_type in self.forbid:
                error = {"code": "MANIFEST_INVALID", "message": "manifest invalid"}
                return httpx.Response(400, json={"errors": [error]})
            if self.check_blobs and self._lacks_blobs(repo, body):
                error = {"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry"}
                return httpx.Response(400, json={"errors": [error]})
            for key in (ref, sha256(body)):
                self.manifests[(repo, key)] = (media_type, body)
            return httpx.Response(201, headers={"Docker-Content-Digest": sha256(body)})
        found = self.manifests.get((repo, ref))
        if found is None:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        headers = {"Content-Type": found[0], "Docker-Content-Digest": sha256(found[1])}
        content = found[1] if request.method == "GET" else b""
        return httpx.Response(200, headers=headers, content=content)

    def _lacks_blobs(self, repo: str, body: bytes) -> bool:
        manifest = json.loads(body)
        named = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
        return any((repo, d["digest"]) not in self.blobs for d in named if "digest" in d)

    def _blob(self, request: httpx.Request, repo: str, digest: str) -> httpx.Response:
        data = self.blobs.get((repo, digest))
        if data is None:
            return httpx.Response(404)
        return httpx.Response(200, content=data if request.method == "GET" else b"")

    def _upload(self, request: httpx.Request, repo: str, rest: str, body: bytes) -> httpx.Response:
        if request.method == "POST":
            return self._start(request, repo)
        if request.method == "DELETE":
            self.uploads.pop(rest, None)
            return httpx.Response(204)
        if rest not in self.uploads:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})
        if request.method == "PATCH":
            self.uploads[rest] += body
            return self._session(repo, rest, 202)
        if body and not self.monolithic:
            return httpx.Response(405)
        data = bytes(self.uploads.pop(rest) + body)
        digest = request.url.params["digest"]
        if sha256(data) != digest:
            return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
        self.blobs[(repo, digest)] = data
        return httpx.Response(201, headers={"Docker-Content-Digest": digest})

    def _start(self, request: httpx.Request, repo: str) -> httpx.Response:
        source, digest = request.url.params.get("from"), request.url.params.get("mount")
        if source and digest and self.mounts and (source, digest) in self.blobs:
            self.blobs[(repo, digest)] = self.blobs[(source, digest)]
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        session = uuid.uuid4().hex
        self.uploads[session] = bytearray()
        return self._session(repo, session, 202)

    def _session(self, repo: str, session: str, code: int) -> httpx.Response:
        path = f"/v2/{repo}/blobs/uploads/{session}?_state={uuid.uuid4().hex[:6]}"
        location = f"https://{self.host}{path}" if self.absolute_location else path
        size = len(self.uploads[session])
        headers = {"Location": location, "Docker-Upload-UUID": session}
        if size:
            headers["Range"] = f"0-{size - 1}"
        return httpx.Response(code, headers=headers)
