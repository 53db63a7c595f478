FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ /opt/app/src/
LABEL dev.imaged.digest=sha256:436978408f49b941a31d2de4582e1b626b5c46cd5ee73f6417336978baa461cf
