#!/usr/bin/env bash
# One SLA sweep over N open tickets of which 1% are due (SPEC: SLA; issue: "One sweep over
# 100,000 open tickets with 1% due"), on SQLite and on PostgreSQL, with the query plans of the
# due-ticket query. Needs sqlite3 and psql; PostgreSQL from POSTDESK_TEST_POSTGRES_URL.
#   scripts/bench-sweep.sh [N]      (default 100000; uses target/release/postdesk)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
BIN=${POSTDESK_BIN:-target/release/postdesk}
[ -x "$BIN" ] || cargo build --release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export POSTDESK_MAILBOX_URL="maildir:$work/mail" POSTDESK_OUTBOX_URL="file:$work/outbox"
export POSTDESK_TEMPLATES_DIR="$PWD/templates" POSTDESK_LOG=warn POSTDESK_TRIAGE_OWNERS=triage@example.com
NOW=2026-12-01T18:00:00Z

# Every ticket is a Sev 3 in engineer_pending, created 10 days ago, responded; deadlines far
# ahead except for 1% whose status update is due (a status_update to the requester each).
seed_sql() {
  local ts=$1 past=$2 future=$3
  cat <<SQL
INSERT INTO tickets (id, subject, requester, status, requested_severity, assigned_severity, created_at, updated_at,
    first_response_at, response_due_at, resolution_due_at, escalation_due_at, update_due_at, status_since)
SELECT i, 'ticket ' || i, 'c' || i || '@acme.test', 'engineer_pending', 3, 3, $past, $past, $past,
       $future, $future, $future, CASE WHEN i % 100 = 0 THEN $past ELSE $future END, $past
FROM $ts;
INSERT INTO participants (ticket_id, address, role, added_at)
SELECT i, 'c' || i || '@acme.test', 'requester', $past FROM $ts;
SQL
}

echo "== SQLite, $N tickets"
export POSTDESK_DATABASE_URL="sqlite:$work/bench.db"
"$BIN" migrate >/dev/null
{ echo "BEGIN;"; seed_sql "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $N) SELECT i FROM s)" \
    "'2026-11-20T15:00:00+00:00'" "'2027-06-01T15:00:00+00:00'"; echo "COMMIT; ANALYZE;"; } | sqlite3 "$work/bench.db"
sqlite3 "$work/bench.db" "EXPLAIN QUERY PLAN SELECT id FROM tickets WHERE update_due_at <= '2026-12-01T18:00:00+00:00' AND status IN ('in_triage','engineer_pending');"
/usr/bin/time -f "sweep: %e s wall, %M KiB peak RSS" "$BIN" sweep --once --now "$NOW" | tail -1
/usr/bin/time -f "second sweep (nothing due): %e s wall" "$BIN" sweep --once --now "$NOW" | tail -1

if [ -n "${POSTDESK_TEST_POSTGRES_URL:-}" ]; then
  echo "== PostgreSQL, $N tickets"
  db=pd_bench_sweep_$$
  psql -q "$POSTDESK_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  url="${POSTDESK_TEST_POSTGRES_URL%/}/$db"
  export POSTDESK_DATABASE_URL="$url"
  "$BIN" migrate >/dev/null
  { echo "BEGIN;"; seed_sql "generate_series(1, $N) AS s(i)" "TIMESTAMPTZ '2026-11-20T15:00:00Z'" "TIMESTAMPTZ '2027-06-01T15:00:00Z'";
    echo "SELECT setval(pg_get_serial_sequence('tickets', 'id'), $N); COMMIT; ANALYZE;"; } | psql -q "$url"
  psql -q "$url" -c "EXPLAIN ANALYZE SELECT id FROM tickets WHERE update_due_at <= TIMESTAMPTZ '$NOW' AND status IN ('in_triage','engineer_pending');" | sed -n 1,8p
  /usr/bin/time -f "sweep: %e s wall, %M KiB peak RSS" "$BIN" sweep --once --now "$NOW" | tail -1
  /usr/bin/time -f "second sweep (nothing due): %e s wall" "$BIN" sweep --once --now "$NOW" | tail -1
  psql -q "$POSTDESK_TEST_POSTGRES_URL" -c "DROP DATABASE $db WITH (FORCE)"
fi
