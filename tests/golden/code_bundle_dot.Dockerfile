FROM base:1
COPY layers/0/ ./
LABEL dev.imaged.digest=sha256:8a0d711b44a04957ea7407f5244715dccdef0fedcb6eb504b3f5afc488ab4843
