FROM registry.invalid/python:3.11-slim-bookworm
RUN --mount=type=secret,id=gh.token,target=/run/secrets/gh.token --mount=type=secret,id=hdr,target=/run/secrets/hdr \
    export GITHUB_TOKEN="$(cat /run/secrets/gh.token)" \
    && curl -H @/run/secrets/hdr https://example.invalid
LABEL dev.imaged.digest=sha256:482443536299e25a13f448b137155df8c74d192551da3dcf709caa108c32ee52
