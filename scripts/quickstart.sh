#!/usr/bin/env bash
# Quick start: builds postdesk, copies the bundled fixtures into a working maildir, runs the worker
# on the embedded default (SQLite ./postdesk.db, maildir ./mail, file outbox ./outbox, templates
# ./templates, all inside ./quickstart), and shows the tickets and acknowledgements it made.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cc >/dev/null 2>&1 || {
  echo "==> installing a C compiler (SQLite is built from source)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq gcc libc6-dev >/dev/null; fi
}
echo "==> building (the first release build takes a few minutes)" >&2
cargo build --release --locked --quiet
bin="$PWD/target/release/postdesk"

rm -rf quickstart
mkdir -p quickstart/mail/new quickstart/mail/cur quickstart/mail/tmp
cp -r templates quickstart/templates
n=0
for f in fixtures/*.eml; do
  n=$((n + 1))
  cp "$f" "quickstart/mail/new/$(printf '%04d' "$n").$(basename "$f" .eml)"
done
cd quickstart
echo "==> $n messages in ./quickstart/mail/new; running the worker until they are all taken" >&2
POSTDESK_LOG=warn "$bin" run --exit-when-idle
echo
"$bin" tickets list
echo
echo "Acknowledgements written to ./quickstart/outbox:"
ls outbox
first=$(ls outbox/*.eml | head -n 1)
echo
echo "==> $first"
sed -n '1,/^--/p' "$first" | head -n 14
echo
echo "==> ticket #1 in full: $bin tickets show 1   (run inside ./quickstart)"
"$bin" tickets show 1
