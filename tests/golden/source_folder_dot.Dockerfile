FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ src/
LABEL dev.imaged.digest=sha256:64cddc6c811eccba6cf1f056c8b481c52329b4605709bd7155d97e3c5c215401
