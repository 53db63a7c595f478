# /// script
# requires-python = ">=3.11"
# dependencies = ["attrs==23.2.0"]
# ///
"""imaged e2e fixture: a PEP 723 script whose header names its dependencies."""

import attrs

print(attrs.__version__)
