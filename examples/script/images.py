"""An image built from a single PEP 723 uv script: its `# /// script` header lists the deps.

Relative paths resolve against this file's folder. Override the registry with `--registry`.
"""

from pathlib import Path

from imaged import Image

report = Image.from_uv_script(Path("report.py"), name="report", registry="localhost:5000")
