FROM base:1
COPY layers/0/ ./
LABEL dev.imaged.digest=sha256:88d28961ac1951288fbd98036a8eff9233c267bbde86a04374788bfb1a0e0720
