#!/usr/bin/env bash
# Build imaged's wheel, install it (with its dependencies) into a fresh virtual environment,
# and run the CLI and the public-API test from there, away from this checkout: a wheel that
# lacks a sub-package or a data file fails here, where the editable install would hide it.
# Run by .ci/run; by hand: `bash scripts/check-wheel.sh` (KEEP=1 keeps the scratch folder).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
PYTHON=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH # nothing of this checkout may leak into the environment under test
work=$(mktemp -d "${TMPDIR:-/tmp}/imaged-wheel.XXXXXX")
if [[ -z ${KEEP:-} ]]; then trap 'rm -rf "$work"' EXIT; fi

# The wheel, built from a copy of the sources so no build/ or *.egg-info lands in the repo.
git ls-files -z --cached --others --exclude-standard | tar -C "$repo" --null -T - -cf - |
    tar -C "$work" --one-top-level=src -xf -
"$PYTHON" -m pip wheel -q --no-deps -w "$work/dist" "$work/src"
wheel=("$work"/dist/imaged-*.whl)
echo "check-wheel: built $(basename "${wheel[0]}")"
if unzip -l "${wheel[0]}" | grep -q 'tests/'; then
    echo "check-wheel: the wheel ships tests/" >&2
    exit 1
fi

# A fresh environment with the wheel, its dependencies, and pytest for the public-API test.
"$PYTHON" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
"$venv_python" -m pip install -q "${wheel[0]}" pytest pytest-timeout

# Everything below runs from an empty folder, so this checkout is not on sys.path.
mkdir "$work/run"
cd "$work/run"
"$venv_python" - "$work/venv" <<'EOF'
import sys
from pathlib import Path

import imaged

venv = Path(sys.argv[1]).resolve()
where = Path(imaged.__file__).resolve()
assert venv in where.parents, f"imaged imported from {where}, not from the venv {venv}"
import imaged.cli.main, imaged.daemon.core, imaged.registry.client  # every role package
print(f"check-wheel: imaged from {where.parent}")
EOF
"$work/venv/bin/imaged" --version
"$work/venv/bin/imaged" hash "$repo/examples/service" | tee "$work/hash-wheel"
# The installed imaged gives the digests the checkout gives.
PYTHONPATH=$repo "$PYTHON" -m imaged hash "$repo/examples/service" >"$work/hash-checkout"
if ! diff -u "$work/hash-checkout" "$work/hash-wheel"; then
    echo "check-wheel: the wheel hashes examples/service differently from the checkout" >&2
    exit 1
fi

cp "$repo/tests/test_public_api.py" "$work/run/"
cat >"$work/run/test_installed.py" <<EOF
"""The public-API test above imports imaged from the venv, not from the checkout."""
from pathlib import Path

import imaged


def test_imaged_comes_from_the_venv() -> None:
    assert Path("$work/venv").resolve() in Path(imaged.__file__).resolve().parents
EOF
"$venv_python" -m pytest -q -p no:cacheprovider --rootdir "$work/run" -c /dev/null \
    -W error "$work/run/test_installed.py" "$work/run/test_public_api.py"
echo "check-wheel: ok"
