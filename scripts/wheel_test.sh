#!/usr/bin/env bash
# Builds the release wheel and tests it the way a user gets it: installed
# into a fresh virtualenv, with pytest running a copy of tests/ from a temp
# folder, so the source tree's python/duckmerge can never be imported.
#
#   ./scripts/wheel_test.sh [pytest args...]
#
# Environment:
#   DUCKMERGE_VENV    venv holding maturin for the build (default: .venv)
#   CARGO_TARGET_DIR  passed through unchanged (reuse an existing build)
#   PYTHON            interpreter for the fresh venv (default: the build
#                     venv's python, else python3); CPython >= 3.10
#   DUCKMERGE_WHEEL   test this wheel instead of building one (CI downloads
#                     the wheel built by .github/workflows/wheels.yml)
#
# Every temp folder is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

venv="${DUCKMERGE_VENV:-.venv}"
case "$venv" in
    /*) ;;
    *) venv="$repo/$venv" ;;
esac

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'wheel_test.sh: error: %s\n' "$*" >&2
    exit 1
}

work="$(mktemp -d "${TMPDIR:-/tmp}/duckmerge-wheel-test.XXXXXX")"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the wheel ---------------------------------------------------------------
if [ -n "${DUCKMERGE_WHEEL:-}" ]; then
    [ -f "$DUCKMERGE_WHEEL" ] || die "DUCKMERGE_WHEEL=$DUCKMERGE_WHEEL is not a file"
    mkdir -p "$work/dist"
    cp "$DUCKMERGE_WHEEL" "$work/dist/"
    step "Testing the given wheel $(basename "$DUCKMERGE_WHEEL")"
else
    maturin="$venv/bin/maturin"
    [ -x "$maturin" ] || die "$maturin not found; run ./scripts/test.sh once (it installs maturin into $venv) or set DUCKMERGE_VENV"
    step "maturin build --release (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<default: ./target>})"
    VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
        "$maturin" build --release --out "$work/dist" --interpreter "$venv/bin/python"
fi

shopt -s nullglob
all_wheels=("$work/dist"/*.whl)
abi3_wheels=("$work/dist"/*-cp310-abi3-*.whl)
shopt -u nullglob
if [ "${#all_wheels[@]}" -ne 1 ] || [ "${#abi3_wheels[@]}" -ne 1 ]; then
    printf '  %s\n' "${all_wheels[@]:-<none>}" >&2
    die "expected exactly one *-cp310-abi3-*.whl, got ${#all_wheels[@]} wheel(s) (listed above)"
fi
wheel="${abi3_wheels[0]}"
echo "wheel: $(basename "$wheel")"

# --- a fresh venv ------------------------------------------------------------
if [ -n "${PYTHON:-}" ]; then
    base_python="$PYTHON"
elif [ -x "$venv/bin/python" ]; then
    base_python="$venv/bin/python"
else
    base_python="python3"
fi
base_version="$("$base_python" -c 'import sys; print(sys.version.split()[0])')" ||
    die "cannot run $base_python (set PYTHON to a CPython >= 3.10)"
step "Fresh virtualenv (Python $base_version from $base_python)"
# Nothing from the environment may put the source tree on sys.path.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
export PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
"$base_python" -m venv "$work/venv"
py="$work/venv/bin/python"
[ -x "$py" ] || py="$work/venv/Scripts/python.exe" # Windows (Git Bash)
[ -x "$py" ] || die "the fresh venv has no python"

step "Wheel contents"
"$py" - "$wheel" <<'PY'
"""Checks the wheel holds the package once: one native module, stubs, no bytecode."""
import re
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
problems = []
duplicates = sorted({n for n in names if names.count(n) > 1})
if duplicates:
    problems.append(f"duplicate entries: {duplicates}")
native = [n for n in names if re.fullmatch(r"duckmerge/_duckmerge\.[^/]*\.(so|pyd)|duckmerge/_duckmerge\.pyd", n)]
if len(native) != 1:
    problems.append(f"expected one native module duckmerge/_duckmerge.*, found {native}")
for required in ("duckmerge/__init__.py", "duckmerge/_duckmerge.pyi", "duckmerge/py.typed"):
    if required not in names:
        problems.append(f"missing {required}")
stale = [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
if stale:
    problems.append(f"bytecode from the source tree (add it to [tool.maturin] exclude): {stale}")
if problems:
    sys.exit("wheel check failed:\n  " + "\n  ".join(problems))
print(f"ok: {len(names)} entries, native module {native[0]}")
PY

step "pip install <wheel>[test]"
"$py" -m pip install --quiet "${wheel}[test]"

# --- the test tree, outside the repository ----------------------------------
run="$work/run"
mkdir -p "$run"
# tests/ plus the repository files tests may read (examples/, benches/), placed
# as in the repository so Path(__file__).parents[1] / "examples" still works.
# python/ is never copied. In a git checkout only tracked and untracked,
# not-ignored files are taken (no __pycache__, no generated bench data).
copy_dirs=(tests examples benches)
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    while IFS= read -r -d '' f; do
        [ -f "$f" ] || continue # tracked but deleted in the worktree
        mkdir -p "$run/$(dirname "$f")"
        cp -p "$f" "$run/$f"
    done < <(git -C "$repo" ls-files -z --cached --others --exclude-standard -- "${copy_dirs[@]}")
else
    for d in "${copy_dirs[@]}"; do
        if [ -d "$d" ]; then cp -R "$d" "$run/"; fi
    done
    find "$run" -name __pycache__ -type d -prune -exec rm -rf {} +
fi
[ -d "$run/tests" ] || die "no tests/ copied into $run"
# pytest's options ([tool.pytest.ini_options]: filterwarnings=error, ...)
# come from a copy of pyproject.toml, passed with -c.
cp pyproject.toml "$run/pyproject.toml"
if [ -n "$(find "$run" \( -name duckmerge -o -name 'duckmerge.py' -o -name '_duckmerge*' \) -print -quit)" ]; then
    die "the copied test tree contains a duckmerge module; it would shadow the installed wheel"
fi

cd "$run"
step "The installed package is the one imported"
"$py" -c '
import pathlib, sys, sysconfig
import duckmerge, duckmerge._duckmerge as native
venv = pathlib.Path(sys.prefix).resolve()
site = {pathlib.Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
for name, f in (("duckmerge", duckmerge.__file__), ("duckmerge._duckmerge", native.__file__)):
    p = pathlib.Path(f).resolve()
    if not any(p.is_relative_to(s) for s in site) or not p.is_relative_to(venv):
        sys.exit(f"{name} was imported from {p}, not from the fresh venv site-packages {sorted(map(str, site))}")
print(f"duckmerge {duckmerge.__version__} (DuckDB {duckmerge.DUCKDB_VERSION}) from {pathlib.Path(duckmerge.__file__).parent}")
'

# The console script declared in pyproject.toml must work from the wheel.
if [ -x "$work/venv/bin/duckmerge" ]; then
    step "duckmerge --help (console script)"
    "$work/venv/bin/duckmerge" --help >/dev/null
    echo "ok"
fi

step "pytest (installed wheel, tests copied to $run)"
"$py" -m pytest -c "$run/pyproject.toml" --rootdir "$run" -p no:cacheprovider "$run/tests" "$@"
