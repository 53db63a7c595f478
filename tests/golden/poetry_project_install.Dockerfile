FROM registry.invalid/python:3.11-slim-bookworm
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH UV_LINK_MODE=copy UV_PYTHON=/opt/venv/bin/python UV_PROJECT_ENVIRONMENT=/opt/venv
RUN --mount=type=cache,id=imaged-pip,target=/root/.cache/pip --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && { [ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv; } \
    && /opt/venv/bin/python -m pip install --disable-pip-version-check uv==0.13.8
RUN --mount=type=cache,id=imaged-uv,target=/root/.cache/uv --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && /opt/venv/bin/uv venv --python /opt/venv/bin/python /opt/poetry \
    && /opt/venv/bin/uv pip install --python /opt/poetry/bin/python poetry==1.8.5
RUN --mount=type=cache,id=imaged-uv,target=/root/.cache/uv --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca --mount=type=bind,source=inputs/0/project,target=/tmp/imaged-inputs/0/project,rw \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && cd /tmp/imaged-inputs/0/project \
    && export POETRY_VIRTUALENVS_CREATE=false POETRY_NO_INTERACTION=1 \
    && /opt/poetry/bin/poetry install --no-root --no-ansi --with docs \
    && /opt/venv/bin/uv pip install --no-deps .
LABEL dev.imaged.digest=sha256:8cbcfc9d8575b03576648ae1e90220c5cda373e6fc36ab6f7561e2b2df1b87e9
