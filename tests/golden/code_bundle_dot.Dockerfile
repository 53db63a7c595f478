FROM base:1
COPY layers/0/ ./
LABEL dev.imaged.digest=sha256:35250c3717f4f5a0e631945d3d337f22c0f359fa2a6a4b314dd81f8927dd851d
