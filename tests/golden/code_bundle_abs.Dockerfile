FROM base:1
COPY layers/0/ /workspace/
LABEL dev.imaged.digest=sha256:ccd35a71e86b8ba0b109824a1ebafacbcab176a486f4624c568264803aeded26
