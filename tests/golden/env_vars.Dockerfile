FROM registry.invalid/python:3.11-slim-bookworm
ENV SPACES="two  spaces and a tab	here" DQUOTE="say \"hi\"" SQUOTE="it's" DOLLAR="\$HOME \${PATH} \$\$" BACKSLASH="C:\\new\\table" TRAILING="ends with \\" EQUALS="a=b=c" EMPTY="" HASH="#not a comment" UNICODE="grüße"
LABEL dev.imaged.digest=sha256:21f2583340fb0f555be1de3b261c8660e42eaf4b30744372f23b9d47c6f6b82c
