FROM registry.invalid/python:3.11-slim-bookworm
# plain_script.py declares no dependencies
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH UV_LINK_MODE=copy UV_PYTHON=/opt/venv/bin/python UV_PROJECT_ENVIRONMENT=/opt/venv
RUN --mount=type=cache,id=imaged-pip,target=/root/.cache/pip --mount=type=secret,id=imaged_build_ca,target=/run/secrets/imaged_build_ca \
    if [ -f /run/secrets/imaged_build_ca ]; then export SSL_CERT_FILE=/run/secrets/imaged_build_ca PIP_CERT=/run/secrets/imaged_build_ca REQUESTS_CA_BUNDLE=/run/secrets/imaged_build_ca; fi \
    && { [ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv; } \
    && /opt/venv/bin/python -m pip install --disable-pip-version-check uv==0.13.8
LABEL dev.imaged.digest=sha256:26bb6579f5284748c4bf113d051fa61f0fdc64d67012c6ab47b1bb28d1427e70
