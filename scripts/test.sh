#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs into
# .venv, then runs rustfmt, clippy, the Rust unit tests, builds the module
# and runs pytest against it, then builds the wheel and runs pytest against
# it installed in a fresh virtualenv. DuckDB's C++ is compiled once per target
# directory (~30 min on 2 cores); set CARGO_TARGET_DIR to reuse one.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${DUCKMERGE_VENV:-$PWD/.venv}"
python="${PYTHON:-python3}"

step() { printf '\n==> %s\n' "$*"; }

step "Python environment ($venv)"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin>=1.9,<2" "pytest>=8" "pandas>=2.0" "pyarrow>=15" "polars>=1.0" \
    "duckdb>=1.1" "mypy>=1.10" numpy "tqdm>=4.60" "moto[server]>=5"

step "cargo fmt --check"
cargo fmt --check

# One profile (release) for everything, so DuckDB's C++ builds once.
step "cargo clippy -- -D warnings"
cargo clippy --release --all-targets --all-features -- -D warnings

step "cargo test"
cargo test --release

step "maturin develop --release"
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop --release --quiet

step "pytest"
"$venv/bin/python" -m pytest "$@"

# The same suite against the built abi3 wheel, installed into a fresh
# virtualenv (not the source tree).
step "wheel test (scripts/wheel_test.sh)"
DUCKMERGE_VENV="$venv" ./scripts/wheel_test.sh "$@"
