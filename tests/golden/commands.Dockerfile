FROM registry.invalid/python:3.11-slim-bookworm
RUN echo one
RUN mkdir -p /data && touch /data/x
LABEL dev.imaged.digest=sha256:7c62177c07d9a250114935a53227643e222da2557426b85bf3f94261b849726a
