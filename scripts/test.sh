#!/usr/bin/env bash
# The test command: start (or reuse) the test infra, then run every test, docker-marked ones included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k registry -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# imaged itself with its test tools (a no-op when they are installed already).
PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "${PYTHON:-python3}" -m pip install -q -e '.[dev]'
bash scripts/test-infra.sh
# A docker-marked test whose infra is missing fails instead of skipping.
export IMAGED_REQUIRE_DOCKER=1
status=0
"${PYTHON:-python3}" -m pytest "$@" || status=$?
if ((status == 5)); then
    echo "scripts/test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
