#!/usr/bin/env bash
# Runs one command inside the built workspace (see tools/activate.sh). Usage: tools/env.sh COMMAND [ARGS...]
# Run tools/setup_workspace.sh first (make does).
set -eo pipefail
# shellcheck disable=SC1091
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/activate.sh"
exec "$@"
