FROM registry.invalid/python:3.11-slim-bookworm
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH UV_LINK_MODE=copy UV_PYTHON=/opt/venv/bin/python UV_PROJECT_ENVIRONMENT=/opt/venv
RUN --mount=type=cache,id=imaged-pip,target=/root/.cache/pip --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && { [ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv; } \
    && /opt/venv/bin/python -m pip install --disable-pip-version-check uv==0.13.8
RUN --mount=type=cache,id=imaged-uv,target=/root/.cache/uv --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca --mount=type=secret,id=pip_token,target=/run/secrets/pip_token \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && export PIP_TOKEN="$(cat /run/secrets/pip_token)" \
    && /opt/venv/bin/uv pip install --index-url https://pypi.internal/simple --extra-index-url https://extra.one/simple --extra-index-url https://extra.two/simple --prerelease allow --no-build-isolation --upgrade -- 'requests>=2' 'flask[async]'
LABEL dev.imaged.digest=sha256:ab14e6ca0662272dea92a200bbe7e3df31ac2a7bbfe9b8ac2286ed9b459e66b7
