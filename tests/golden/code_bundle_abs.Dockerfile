FROM base:1
COPY layers/0/ /workspace/
LABEL dev.imaged.digest=sha256:c39fe857a53b30bcddb04a298b84b24626787e991b29257efe5db44933c10936
