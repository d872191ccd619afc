# tools/lib.sh — shared by tools/up, tools/down, tools/test, tools/bench. Source it.
TESSERA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '%s\n' "$*" >&2; }
die() { say "$(basename "$0"): error: $*"; exit 1; }

# Builds the Release binaries into build/release (or uses $TESSERA_BIN, a build directory that
# already holds them) and sets BIN_META, BIN_CHUNK, BIN_MOUNT, BIN_ADMIN.
tessera_binaries() {
  local dir
  if [[ -n "${TESSERA_BIN:-}" ]]; then
    dir=$TESSERA_BIN
  else
    dir="$TESSERA_ROOT/build/release"
    if [[ ! -f "$dir/CMakeCache.txt" ]]; then
      cmake -S "$TESSERA_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DTESSERA_TESTS=OFF >/dev/null \
        || die "cmake failed"
    fi
    say "building (Release) in $dir ..."
    cmake --build "$dir" -j2 --target tessera-meta tessera-chunk tessera-mount tessera bench_meta >/dev/null \
      || { cmake --build "$dir" -j1 --target tessera-meta tessera-chunk tessera-mount tessera 2>&1 | tail -30; die "build failed"; }
  fi
  BIN_META=$dir/meta/tessera-meta
  BIN_CHUNK=$dir/chunk/tessera-chunk
  BIN_MOUNT=$dir/client/tessera-mount
  BIN_ADMIN=$dir/tools/tessera
  for b in "$BIN_META" "$BIN_CHUNK" "$BIN_MOUNT" "$BIN_ADMIN"; do
    [[ -x $b ]] || die "missing binary $b"
  done
}

# pid_alive FILE BINARY-NAME: the pid in FILE runs BINARY-NAME (not a reused pid).
pid_alive() {
  local file=$1 name=$2 pid
  [[ -f $file ]] || return 1
  pid=$(cat "$file" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$name" || return 1
  return 0
}

# is_mountpoint DIR: DIR (absolute) is a mount point in this namespace.
is_mountpoint() {
  awk -v d="$1" '{ gsub(/\\040/, " ", $5); if ($5 == d) found = 1 } END { exit !found }' /proc/self/mountinfo
}
