FROM registry.invalid/python:3.11-slim-bookworm
COPY layers/0/ /usr/local/etc/
LABEL dev.imaged.digest=sha256:4724a7e2ce0b261ab762e29fb0fc20515ba1bc66dfa13fd74cb2caa979a96188
