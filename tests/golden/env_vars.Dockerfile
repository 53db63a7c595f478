FROM registry.invalid/python:3.11-slim-bookworm
ENV SPACES="two  spaces and a tab	here" DQUOTE="say \"hi\"" SQUOTE="it's" DOLLAR="\$HOME \${PATH} \$\$" BACKSLASH="C:\\new\\table" TRAILING="ends with \\" EQUALS="a=b=c" EMPTY="" HASH="#not a comment" UNICODE="grüße"
LABEL dev.imaged.digest=sha256:8cdbe6e5db2e90e3d685dbf9989ff53f8f78e791bc9bc3438d05a9a3219cbb33
