FROM base:1
COPY layers/0/ /workspace/
LABEL dev.imaged.digest=sha256:c101a2eb85b2fc945cc0e92bda5cb2e93ffff458eafda637be8cd644852f6552
