FROM registry.invalid/python:3.11-slim-bookworm
RUN --mount=type=cache,id=imaged-apt-cache,target=/var/cache/apt,sharing=locked --mount=type=cache,id=imaged-apt-lists,target=/var/lib/apt/lists,sharing=locked --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    APT_CA=""; if [ -f /run/secrets/imaged_build_ca ]; then APT_CA="-o Acquire::https::CAInfo=/run/secrets/imaged_build_ca"; fi \
    && apt-get $APT_CA update \
    && DEBIAN_FRONTEND=noninteractive apt-get $APT_CA install -y --no-install-recommends -- curl ca-certificates
LABEL dev.imaged.digest=sha256:6f6718096f59ece9321da2b1824bf52bd7d606d2844c218a672241378ff4a3f4
