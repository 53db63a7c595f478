FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ /usr/local/etc/
LABEL dev.imaged.digest=sha256:5799b8f81f41cf518b3b57de61cede0b17952a79f78b07af188b444fba99079e
