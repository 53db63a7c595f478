# /// script
# requires-python = ">=3.11"
# dependencies = ["iniconfig>=1"]
# ///
import os

print("token set:", bool(os.environ.get("HF_TOKEN")))
