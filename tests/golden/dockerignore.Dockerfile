FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/1/ /app/src/
LABEL dev.imaged.digest=sha256:a1abd51308f4f6a1118c2f35a18563cc1e4952dd313c320411147662317c8cfb
