FROM registry.invalid/python:3.11-slim-bookworm
WORKDIR /srv/app
LABEL dev.imaged.digest=sha256:26308216df0200bf177568d0baff2092c82852ccde4aea4ddce275cb85107c55
