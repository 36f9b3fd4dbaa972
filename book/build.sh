#!/usr/bin/env bash
# Build the hetlab book.
#
#   bash book/build.sh            full book (with solutions)  -> book/_build/html/
#   bash book/build.sh --student  student edition (no solutions) -> book/_build_student/html/
#   bash book/build.sh --student --reuse-cache
#                                 the same, reusing the executions of the last full build
#                                 (run right after a full build: nothing is executed twice)
#
# Notebook executions are cached in book/_build/.jupyter_cache. Every build empties that cache
# first (so every cell runs against the current library), except --student --reuse-cache.
# Every notebook is executed; any Sphinx warning (-W -n) or failing cell is an
# error and the script exits non-zero. Works from any working directory.
set -euo pipefail

usage() { echo "usage: bash book/build.sh [--student [--reuse-cache]]" >&2; }

mode=full
reuse=no
for arg in "$@"; do
  case "$arg" in
    --student) mode=student ;;
    --reuse-cache) reuse=yes ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; usage; exit 2 ;;
  esac
done

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd -- "$here/.." && pwd)"
cd "$root"

if ! command -v jupyter-book >/dev/null 2>&1; then
  echo "build.sh: jupyter-book not found; install the book extra (pip install -e '.[book]')" >&2
  exit 1
fi

# Notebook kernels must use matplotlib's inline backend; MPLBACKEND=Agg would
# silently drop every figure from the pages.
unset MPLBACKEND

if [[ "$reuse" == yes && "$mode" != student ]]; then
  echo "build.sh: --reuse-cache only applies to --student" >&2; usage; exit 2
fi
if [[ "$reuse" == no ]]; then
  rm -rf book/_build/.jupyter_cache   # never show outputs computed by an older library
fi

start=$SECONDS
if [[ "$mode" == full ]]; then
  jupyter-book build book --all -W -n --keep-going
  out="book/_build/html"
else
  # jupyter-book always writes to <path-output>/_build/html; build into a work
  # folder and move the HTML to book/_build_student/html afterwards.
  work="book/_build_student/work"
  rm -rf book/_build_student/html   # never leave a stale student edition behind
  jupyter-book build book --all -W -n --keep-going \
    --config book/_config_student.yml --path-output "$work"
  mv "$work/_build/html" book/_build_student/html
  out="book/_build_student/html"
fi

test -f "$out/index.html" || { echo "build.sh: $out/index.html is missing" >&2; exit 1; }
echo "build.sh: $mode build OK in $((SECONDS - start)) s -> $out/index.html"
