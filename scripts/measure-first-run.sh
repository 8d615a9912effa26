#!/usr/bin/env bash
# The README's first-run numbers, measured the way a new user meets the project: a new
# clone (no .venv, nothing built), an empty pip cache (PIP_CACHE_DIR: a new folder, so
# every wheel is downloaded from the index) and no local wheel folder (PIP_FIND_LINKS
# unset). Everything lives in one temporary folder, removed at the end (also on failure
# or Ctrl-C); nothing outside it is touched.
#
#   scripts/measure-first-run.sh             `make demo` fresh, `make demo` again, size of .venv
#   scripts/measure-first-run.sh --test      then `make install` (the test extras) on the same
#                                            .venv: time, size, and that it changed nothing the
#                                            demo installed (downloads several GB)
#   --worktree   measure this working tree, uncommitted changes included, instead of HEAD
#
# Needs git, make, curl and python3 (3.11+) on PATH, as `make demo` does.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
TEST=0
WORKTREE=0
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    --worktree) WORKTREE=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/eas-first-run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
CLONE="$WORK/eas-serving"
export PIP_CACHE_DIR="$WORK/pip-cache"
mkdir "$PIP_CACHE_DIR"
unset PIP_FIND_LINKS PIP_NO_CACHE_DIR

say() { printf '%s\n' "$*" | tee -a "$WORK/summary"; }
seconds() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.0f}")' "$1" "$2"; }
human() { local s=$1; if [ "$s" -ge 60 ]; then echo "$((s / 60)) min $((s % 60)) s"; else echo "$s s"; fi; }
size() { du -sb "$1" | python3 -c 'import sys; b = int(sys.stdin.read().split()[0]); print(f"{b / 1e9:.2f} GB" if b >= 1e9 else f"{b / 1e6:.0f} MB")'; }
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime; }
# Bytes received by this machine's network interfaces (loopback excluded): what pip
# downloaded, give or take other traffic (pip may cache nothing, e.g. behind a proxy).
received() { awk -F'[: ]+' 'NR > 2 && $2 != "lo" { n += $3 } END { printf "%.0f\n", n }' /proc/net/dev 2>/dev/null || echo 0; }
mb() { python3 -c 'import sys; b = int(sys.argv[1]); print(f"{b / 1e9:.2f} GB" if b >= 1e9 else f"{b / 1e6:.0f} MB")' "$1"; }
# Run a make target in the clone, timed; its output goes to $WORK/<log>, its tail to the screen on failure.
timed_make() {
  local log=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  if ! (cd "$CLONE" && make "$@") >"$WORK/$log" 2>&1; then
    echo "make $* failed; the end of its output:" >&2
    tail -40 "$WORK/$log" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  ELAPSED=$(seconds "$t0" "$t1")
}

git clone -q "$REPO" "$CLONE"
SOURCE="a clone of $(git -C "$REPO" rev-parse --short HEAD)"
if [ "$WORKTREE" = 1 ]; then
  # The working tree as it is: changed and new files (not ignored ones) over the clone.
  (cd "$REPO" && git ls-files -z -m -o --exclude-standard \
    | xargs -0 -r tar -cf - --no-recursion --ignore-failed-read 2>/dev/null) | tar -xf - -C "$CLONE"
  (cd "$REPO" && git ls-files -z -d) | (cd "$CLONE" && xargs -0 -r rm -f)
  SOURCE="$SOURCE plus the working tree's uncommitted changes"
fi

say "== eas-serving first run, $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(python3 --version)"
say "   source: $SOURCE; no .venv; empty pip cache (PIP_CACHE_DIR=$PIP_CACHE_DIR); PIP_FIND_LINKS unset"
say "   load average before: $(load)"

RX0=$(received)
timed_make demo-1.log demo
RX1=$(received)
grep -F '    response: {"predictions"' "$WORK/demo-1.log" >/dev/null \
  || { echo "make demo printed no prediction:" >&2; tail -20 "$WORK/demo-1.log" >&2; exit 1; }
DEMO_FRESH=$ELAPSED
DEMO_PART=$(sed -n 's/^==> done in \([0-9]*\) s$/\1/p' "$WORK/demo-1.log")
VENV_DEMO=$(size "$CLONE/.venv")
timed_make demo-2.log demo
DEMO_AGAIN=$ELAPSED
say "   make demo, fresh:              $(human "$DEMO_FRESH") ($DEMO_FRESH s; the demo itself ${DEMO_PART:-?} s, the rest is creating .venv and installing)"
say "     $(grep -F '    response:' "$WORK/demo-1.log" | sed 's/^ *//')"
say "   .venv after make demo:         $VENV_DEMO (downloaded: $(mb $((RX1 - RX0))), the network's count)"
say "   make demo again, .venv there:  $(human "$DEMO_AGAIN") ($DEMO_AGAIN s)"

if [ "$TEST" = 1 ]; then
  PY="$CLONE/.venv/bin/python"
  "$PY" -m pip list --format=freeze --disable-pip-version-check >"$WORK/before.txt" 2>/dev/null
  RX0=$(received)
  timed_make install.log install
  RX1=$(received)
  INSTALL=$ELAPSED
  "$PY" -m pip list --format=freeze --disable-pip-version-check >"$WORK/after.txt" 2>/dev/null
  # Packages of the demo's .venv that the test install replaced: name old -> new.
  CHANGED=$(python3 - "$WORK/before.txt" "$WORK/after.txt" <<'PY'
import sys
before, after = ({n.lower(): v for n, _, v in (ln.strip().partition("==") for ln in open(f) if "==" in ln)}
                 for f in sys.argv[1:])
print(", ".join(f"{n} {v} -> {after.get(n, 'removed')}" for n, v in sorted(before.items()) if after.get(n) != v))
PY
)
  ADDED=$(comm -13 <(sort "$WORK/before.txt") <(sort "$WORK/after.txt") | wc -l)
  timed_make install-2.log install
  AGAIN=$(grep -c 'pip install' "$WORK/install-2.log" || true)
  say "   make install (test extras) on that .venv: $(human "$INSTALL") ($INSTALL s); $ADDED packages added or changed"
  say "     of the demo's packages, changed by it (a test extra needs another version): ${CHANGED:-none}"
  say "   .venv after make install:      $(size "$CLONE/.venv") (downloaded: $(mb $((RX1 - RX0))) more)"
  say "   make install again:            $(human "$ELAPSED"), $AGAIN pip runs"
fi
say "   load average after: $(load)"
echo
echo "(removing $WORK)"
