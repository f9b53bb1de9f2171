#!/usr/bin/env bash
# Runs every postdesk test on a fresh Debian machine with Rust: installs what is missing
# (apt-get), starts what the tests need, then runs fmt, clippy and cargo test.
#
# PostgreSQL: POSTDESK_TEST_POSTGRES_URL is used when set (a server where the tests may create
# and drop databases, e.g. postgres://postgres@127.0.0.1:5432). Otherwise a throwaway cluster is
# made with initdb in a temp dir on a free loopback port and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  log "installing: $*"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if [ -z "${POSTDESK_TEST_POSTGRES_URL:-}" ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
fi
# The live-mail tests start their own Dovecot (IMAP, LMTP) and Postfix (SMTP); the template
# tests open rendered mail in headless Chromium; TLS test certificates are made with openssl.
[ -x /usr/sbin/dovecot ] && [ -e /usr/lib/dovecot/lmtp ] || missing+=(dovecot-imapd dovecot-lmtpd)
[ -x /usr/lib/postfix/sbin/master ] || missing+=(postfix)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  # Postfix asks a question at install time; answer it (and let no other MTA replace it).
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
  apt_install "${missing[@]}"
fi

free_port() {
  local port
  for port in $(shuf -i 20000-60000 -n 50); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  return 1
}

cleanup_pg=""
cleanup() {
  if [ -n "$cleanup_pg" ]; then
    eval "$cleanup_pg" || true
  fi
}
trap cleanup EXIT

if [ -z "${POSTDESK_TEST_POSTGRES_URL:-}" ]; then
  bindir=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
  pgdir=$(mktemp -d /tmp/postdesk-pg.XXXXXX)
  chmod 755 "$pgdir"
  port=$(free_port)
  run_pg=()
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root: the cluster belongs to the postgres system user.
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$pgdir" postgres
    chown postgres "$pgdir"
    run_pg=(runuser -u postgres --)
  fi
  log "starting a throwaway PostgreSQL on 127.0.0.1:$port in $pgdir"
  "${run_pg[@]}" "$bindir/initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 >/dev/null
  "${run_pg[@]}" "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
  cleanup_pg="${run_pg[*]} $bindir/pg_ctl -D $pgdir/data -m immediate stop >/dev/null; rm -rf $pgdir"
  export POSTDESK_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port"
fi
log "PostgreSQL for tests: $POSTDESK_TEST_POSTGRES_URL"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
log "cargo test"
# Unit and integration tests (doc comments hold no examples to run). The summary line at the end
# adds up every test binary's result.
out=$(mktemp /tmp/postdesk-test.XXXXXX)
cargo test --locked --lib --bins --tests -- --test-threads=2 2>&1 | tee "$out"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$out"
rm -f "$out"
