FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ /opt/app/
LABEL dev.imaged.digest=sha256:ec328eeef40d607a1112b6da9dcd281ed85b0cc7f0a1c4628678a27837a28a84
