FROM registry.invalid/python:3.11-slim-bookworm
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH UV_LINK_MODE=copy UV_PYTHON=/opt/venv/bin/python UV_PROJECT_ENVIRONMENT=/opt/venv
RUN --mount=type=cache,id=imaged-pip,target=/root/.cache/pip --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && { [ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv; } \
    && /opt/venv/bin/python -m pip install --disable-pip-version-check uv==0.13.8
RUN --mount=type=cache,id=imaged-uv,target=/root/.cache/uv --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && /opt/venv/bin/uv pip install attrs==23.2.0 'rich>=13'
LABEL dev.imaged.digest=sha256:5c096d0962dec3f599bb8118fef760bbb8c0501aa076e447a9799a5142c73efb
