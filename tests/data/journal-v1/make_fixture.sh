#!/bin/sh
# Remakes journal-v1.sqlite with the code of main at 774b073 (schema version 1),
# the journal a user of that code has today. Run from this folder, with the repo's venv:
#   git archive 774b073 | tar -x -C /tmp/old774 && sh make_fixture.sh /tmp/old774
# The sandbox answers 503 to a seeded 40% of POSTs; with max_attempts = 1 those rows
# end `failed`. --limit 8 leaves the last rows `pending`; row 10 (Ivy) is `invalid`,
# row 11 (Jo) a `duplicate` of row 2. record.jsonl is what the sandbox saw.
set -e
OLD=${1:?path to a checkout of 774b073}
PY=${PYTHON:-../../../.venv/bin/python}
rm -f journal-v1.sqlite* record.jsonl report.csv
PORT=18799
PYTHONPATH=$OLD $PY -m dialer simulate --port $PORT --api-key fixture-key \
    --fail-rate 0.4 --seed 7 --record record.jsonl &
SANDBOX=$!
trap 'kill $SANDBOX' EXIT
sleep 2
SYNTHFLOW_API_KEY=fixture-key PYTHONPATH=$OLD $PY -m dialer run campaign.toml \
    --base-url http://127.0.0.1:$PORT --limit 8 || test $? -eq 75
PYTHONPATH=$OLD $PY -c "import dialer; print(dialer.__file__)"
rm -f journal-v1.sqlite-wal journal-v1.sqlite-shm journal-v1.sqlite.lock report.csv
