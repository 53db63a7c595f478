FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/1/ /app/src/
LABEL dev.imaged.digest=sha256:62fea8bc87c9512dc8fbffdbed338d9a24f2ef36a34331518e9f5e01ceed9da9
