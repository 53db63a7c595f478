FROM registry.invalid/python:3.11-slim-bookworm
RUN echo one
RUN mkdir -p /data && touch /data/x
LABEL dev.imaged.digest=sha256:9f805fe03db15fa8885bc8cf8f10aeb901ae50adc11f676bccacf55222e9da3e
