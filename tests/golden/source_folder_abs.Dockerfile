FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ /opt/app/src/
LABEL dev.imaged.digest=sha256:5b6eb3bb313dd5ec4245cfa5e0af8a59637f91e877b3d9deb03009bc9bc72a91
