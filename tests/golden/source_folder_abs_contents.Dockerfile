FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ /opt/app/
LABEL dev.imaged.digest=sha256:7b875a3ac24fd30bdf831b23b091e718c54a80b5ec691639a4bfe31de0fe8fdf
