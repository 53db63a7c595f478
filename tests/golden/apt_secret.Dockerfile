FROM registry.invalid/python:3.11-slim-bookworm
RUN --mount=type=cache,id=imaged-apt-cache,target=/var/cache/apt,sharing=locked --mount=type=cache,id=imaged-apt-lists,target=/var/lib/apt/lists,sharing=locked --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca --mount=type=secret,id=apt.token,target=/run/secrets/apt.token \
    APT_CA=""; if [ -f /run/secrets/imaged_build_ca ]; then APT_CA="-o Acquire::https::CAInfo=/run/secrets/imaged_build_ca"; fi \
    && export APT_TOKEN="$(cat /run/secrets/apt.token)" \
    && apt-get $APT_CA update \
    && DEBIAN_FRONTEND=noninteractive apt-get $APT_CA install -y --no-install-recommends git
LABEL dev.imaged.digest=sha256:b642e4f3a4a99a5ff5d72f203ef6f014743b36089f98ee7814234735fdebffb5
