FROM busybox:1.36
WORKDIR /x
LABEL dev.imaged.digest=sha256:72adb30f12b73aab918840f38aab7e3978cce909e8c506cbfdd83868e16e1335
