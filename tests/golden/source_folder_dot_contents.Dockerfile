FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ ./
LABEL dev.imaged.digest=sha256:a6cc31b84a1c5601ff7fea4efa670e69eee3e4b4c9323bb83e2586d571b6faf2
