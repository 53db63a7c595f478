FROM registry.invalid/python:3.11-slim-bookworm
WORKDIR /srv/app
LABEL dev.imaged.digest=sha256:6df090e460e495216c609f38b015a90933009a68221778fdbe97c2268e33b4a2
