FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ ./
LABEL dev.imaged.digest=sha256:c7a8ca4242eb446c433aec9935a214d26adc3f60c2be7b42bb2f685583b5c253
