#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ for SECONDS (default 1800) with cargo-fuzz (libFuzzer) on the
# stable toolchain, one target after the other:
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# - cargo-fuzz is installed from crates.io when missing. With `--sanitizer none` it passes rustc
#   only stable flags (-Cpasses=sancov-module and -Cllvm-args for SanitizerCoverage), so no
#   nightly and no RUSTC_BOOTSTRAP are needed; libFuzzer itself is built from the libfuzzer-sys
#   crate with the system's C++ compiler. Without a sanitizer a crash is a Rust panic (debug
#   assertions and overflow checks are on in fuzz/Cargo.toml's release profile, except in
#   mail-parser, which runs as in production), which is what postdesk's safe code can do.
# - Each target starts from its committed corpus (fuzz/corpus/<target>/) plus seeds copied at run
#   time from fixtures/ and ../shared/corpus (never committed), in fuzz/run/<target>/ (ignored by
#   git). New inputs stay there; `cargo fuzz cmin` and a copy into fuzz/corpus/ keep the useful
#   ones.
# - A crash, a hang (10 s per input) or an out-of-memory (2 GB) is written to
#   fuzz/regressions/<target>/ and fuzzing goes on; tests/fuzz_replay.rs replays every file there
#   in the ordinary `cargo test`, so a fixed bug stays fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-1800}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(parse_decide subject quote dsn commands config templates)
fi

log() { printf '==> %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz from crates.io"
  cargo install --locked cargo-fuzz
fi

shared=../shared/corpus
seed() {
  local target=$1 dir=fuzz/run/$1
  mkdir -p "$dir" "fuzz/regressions/$target"
  cp -n fuzz/corpus/"$target"/* "$dir"/ 2>/dev/null || true
  case $target in
    parse_decide | dsn | quote)
      find fixtures -name '*.eml' -exec cp -n {} "$dir"/ \;
      if [ -d "$shared" ]; then
        for sub in rt zammad; do
          find "$shared/$sub" -type f ! -name '*.yml' ! -name '*.md' |
            while read -r f; do cp -n "$f" "$dir/$sub-$(basename "$f")"; done
        done
      fi
      ;;
    subject)
      # One seed per Subject line of the fixtures and the shared corpus.
      { grep -rh -m1 '^Subject:' fixtures "$shared" 2>/dev/null || true; } |
        sed 's/^Subject: //' | sort -u | head -500 |
        while IFS= read -r s; do
          printf '%s' "$s" >"$dir/subject-$(printf '%s' "$s" | sha1sum | cut -c1-16)"
        done
      ;;
  esac
}

summary=()
for t in "${targets[@]}"; do
  seed "$t"
  log "fuzzing $t for ${secs}s"
  out=fuzz/run/$t.log
  set +e
  (cd fuzz && cargo fuzz run --sanitizer none -O "$t" "run/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=1048576 \
    -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -artifact_prefix="regressions/$t/" -print_final_stats=1) 2>&1 | tee "$out" | grep -E 'INFO: fuzzed|exec/s|crash|timeout|oom|cov:' | tail -5
  set -e
  found=$(find "fuzz/regressions/$t" -type f | wc -l)
  stats=$(grep -E '^#[0-9]+' "$out" | tail -1)
  summary+=("$t: $stats; files in fuzz/regressions/$t: $found")
done
printf '%s\n' "${summary[@]}"
