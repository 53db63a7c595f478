FROM base:1
COPY layers/0/ ./
LABEL dev.imaged.digest=sha256:93a64115e1a494740530895c61fbd8828a744f3210e9824ebfe6ee18b6523dcd
