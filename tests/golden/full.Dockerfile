FROM registry.invalid/python:3.11-slim-bookworm
RUN --mount=type=cache,id=imaged-apt-cache,target=/var/cache/apt,sharing=locked --mount=type=cache,id=imaged-apt-lists,target=/var/lib/apt/lists,sharing=locked --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    APT_CA=""; if [ -f /run/secrets/imaged_build_ca ]; then APT_CA="-o Acquire::https::CAInfo=/run/secrets/imaged_build_ca"; fi \
    && apt-get $APT_CA update \
    && DEBIAN_FRONTEND=noninteractive apt-get $APT_CA install -y --no-install-recommends curl git
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH UV_LINK_MODE=copy UV_PYTHON=/opt/venv/bin/python UV_PROJECT_ENVIRONMENT=/opt/venv
RUN --mount=type=cache,id=imaged-pip,target=/root/.cache/pip --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && { [ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv; } \
    && /opt/venv/bin/python -m pip install --disable-pip-version-check uv==0.13.8
RUN --mount=type=cache,id=imaged-uv,target=/root/.cache/uv --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && /opt/venv/bin/uv pip install fastapi==0.110.0 uvicorn
RUN --mount=type=cache,id=imaged-uv,target=/root/.cache/uv --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca --mount=type=bind,source=inputs/2/requirements.txt,target=/tmp/imaged-inputs/2/requirements.txt \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && /opt/venv/bin/uv pip install -r /tmp/imaged-inputs/2/requirements.txt
ENV APP_MODE="prod" GREETING="say \"hi\" to \$USER"
WORKDIR /app
COPY layers/5/ /app/src/
COPY layers/6/ /etc/app/
RUN python -c 'import fastapi'
LABEL dev.imaged.digest=sha256:fe9ef9749184da2945b58bf8cf961b45ee4beb3028de7334d67362166a024c85
