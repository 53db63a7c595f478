FROM registry.invalid/python:3.11-slim-bookworm
RUN --mount=type=secret,id=gh.token,target=/run/secrets/gh.token --mount=type=secret,id=hdr,target=/run/secrets/hdr \
    export GITHUB_TOKEN="$(cat /run/secrets/gh.token)" \
    && curl -H @/run/secrets/hdr https://example.invalid
LABEL dev.imaged.digest=sha256:ea90c894a0b4aa82fd2042065146d08c41253fe98b0bf22012c683b23ab17bb1
