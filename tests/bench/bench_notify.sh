#!/usr/bin/env bash
# What PostgreSQL's NOTIFY costs a committing transaction: pgbench runs the same small write transaction
# (one row update of 100 and one insert, like a submission's) with and without `SELECT pg_notify(...)`.
# NOTIFY takes a database-wide lock at commit, so notifying transactions commit one at a time.
#
#   tests/bench/bench_notify.sh [clients=64] [seconds=8] [rounds=3]
#
# Needs pgbench (postgresql-client) and the PostgreSQL of ANTENNA_TEST_PG's host (127.0.0.1:5432, user
# postgres, database test). Works in a schema of its own, dropped at the end.
set -euo pipefail
clients=${1:-64} seconds=${2:-8} rounds=${3:-3}
schema="notifybench_$$"
psql=(psql -h 127.0.0.1 -U postgres -d test -q -v ON_ERROR_STOP=1)
work=$(mktemp -d)
trap '"${psql[@]}" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1; rm -rf "$work"' EXIT
"${psql[@]}" -c "CREATE SCHEMA $schema; CREATE TABLE $schema.t(id int PRIMARY KEY, n bigint);
  INSERT INTO $schema.t SELECT g, 0 FROM generate_series(1, 100) g;
  CREATE TABLE $schema.e(id bigserial PRIMARY KEY, tid int, at timestamptz DEFAULT now());"
body=$'\\set id random(1, 100)\nBEGIN;\nUPDATE t SET n = n + 1 WHERE id = :id;\nINSERT INTO e(tid) VALUES (:id);\n'
printf '%sCOMMIT;\n' "$body" >"$work/plain.sql"
printf "%sSELECT pg_notify('antenna_outbox', 'lumi');\nCOMMIT;\n" "$body" >"$work/notify.sql"
echo "| round | transaction | tps | latency average ms |"
echo "|---|---|---:|---:|"
for round in $(seq "$rounds"); do
  for script in plain notify; do
    out=$(PGOPTIONS="-c search_path=$schema" pgbench -n -h 127.0.0.1 -U postgres -c "$clients" -j 2 -T "$seconds" \
      -f "$work/$script.sql" test 2>/dev/null)
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    echo "| $round | $script | ${tps%.*} | $lat |"
  done
done
