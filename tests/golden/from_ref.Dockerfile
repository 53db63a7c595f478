FROM busybox:1.36
WORKDIR /x
LABEL dev.imaged.digest=sha256:e06d768b71d7733fe6da289ae32deb1c349b284cf0cfc5be5984fbbd4607b0c0
