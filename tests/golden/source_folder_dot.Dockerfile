FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ src/
LABEL dev.imaged.digest=sha256:f6d5863e32285b552cbbfb2f6c4b72f8b3f086f910e994b333a09ddb0206f5f0
