#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy (warnings are errors), the full test suite.
# Installs the Debian packages it needs when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
ensure_rust

echo ">> cargo fmt --check"
cargo fmt --all --check
echo ">> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo ">> building binaries (the end-to-end tests run them)"
cargo build --workspace --bins --locked
echo ">> cargo test"
cargo test --workspace --locked
