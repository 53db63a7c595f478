FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ ./
LABEL dev.imaged.digest=sha256:ad4445f47571f976027b29fcf363348ac486d385ab8fdf68d9f9e47d2d58a319
