FROM base:1
COPY layers/0/ /workspace/
LABEL dev.imaged.digest=sha256:2b6959a9b6b79c2b622c3f9772d4ede7784ea3b2209e624f665b266c96cf8477
