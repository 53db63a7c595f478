#!/usr/bin/env bash
# The main job on a fresh Debian machine: install imaged, start an engine and a local
# registry (scripts/test-infra.sh), then watch the bundled examples and build/push them.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[dev]'
bash scripts/test-infra.sh >/dev/null
state="${IMAGED_TEST_INFRA:-$PWD/.imaged-test-infra.json}"
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]] or '')" "$state" "$1"; }
export IMAGED_DEBIAN_BASE="${IMAGED_DEBIAN_BASE:-$(field debian_base_template)}"
export IMAGED_BUILD_CA_BUNDLE="${IMAGED_BUILD_CA_BUNDLE:-$(field ca_bundle)}"
export IMAGED_DOCKER_CLI="${IMAGED_DOCKER_CLI:-$(field docker_cli)}"
export IMAGED_STATE_DIR="${IMAGED_STATE_DIR:-$PWD/.imaged-state}"
exec imaged watch examples/ --recursive --registry "$(field registry)" "$@"
