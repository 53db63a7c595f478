FROM registry.invalid/python:3.11-slim-bookworm
RUN --mount=type=cache,id=imaged-apt-cache,target=/var/cache/apt,sharing=locked --mount=type=cache,id=imaged-apt-lists,target=/var/lib/apt/lists,sharing=locked --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    APT_CA=""; if [ -f /run/secrets/imaged_build_ca ]; then APT_CA="-o Acquire::https::CAInfo=/run/secrets/imaged_build_ca"; fi \
    && apt-get $APT_CA update \
    && DEBIAN_FRONTEND=noninteractive apt-get $APT_CA install -y --no-install-recommends curl ca-certificates
LABEL dev.imaged.digest=sha256:0207d5236a2e2d2d73b75dba843fe426b0fc50583f2af904795b09da6ff01f65
