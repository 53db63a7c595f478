FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ ./
LABEL dev.imaged.digest=sha256:91244eebbcc8356c4c51e0d3028d18c0b945e388502dc77e476f80d7e6579591
