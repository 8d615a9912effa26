#!/usr/bin/env bash
# make demo: start eas-server, deploy the iris model with eascmd, call it with curl, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
EASCMD=.venv/bin/eascmd
DIR=$(mktemp -d "${TMPDIR:-/tmp}/eas-demo.XXXXXX")
PORT=${EAS_DEMO_PORT:-$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
ENDPOINT="http://127.0.0.1:$PORT"
T0=$(date +%s)

echo "==> starting eas-server on $ENDPOINT (data in $DIR; log in $DIR/server.log)"
setsid $PY -m eas.server --data-dir "$DIR" --port "$PORT" --grpc-port 0 >"$DIR/server.log" 2>&1 &
SERVER=$!
cleanup() {
  local status=$?
  echo "==> stopping eas-server"
  kill -TERM "$SERVER" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$SERVER" 2>/dev/null || true
  # Leave nothing behind: the local Ray's session directory (logs) and, after a success,
  # the demo's data; after a failure the data stays for a look at server.log.
  $PY -c "from eas.backend.ray_serve import remove_local_session as rm; rm($SERVER)" 2>/dev/null || true
  if [ "$status" = 0 ]; then rm -rf "$DIR"; else echo "==> kept $DIR (server.log) for a look"; fi
}
trap cleanup EXIT

echo "==> training a tiny model (scikit-learn iris)"
$PY examples/iris/train.py "$DIR/model.joblib"

for _ in $(seq 1 240); do
  curl -sf "$ENDPOINT/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { echo "eas-server exited:"; tail -20 "$DIR/server.log"; exit 1; }
  sleep 0.5
done

cat >"$DIR/iris.json" <<JSON
{
  "name": "iris",
  "processor": "sklearn",
  "model_path": "$DIR/model.joblib",
  "metadata": {"instance": 1, "cpu": 1}
}
JSON
echo "==> eascmd create $DIR/iris.json"
$EASCMD -c "$DIR/eascmd.conf" create "$DIR/iris.json"
TOKEN=$($EASCMD -c "$DIR/eascmd.conf" desc iris --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["AccessToken"])')

echo "==> curl $ENDPOINT/api/predict/iris"
BODY='{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
echo "    request:  $BODY"
ANSWER=$(curl -sS -H "Authorization: $TOKEN" -d "$BODY" "$ENDPOINT/api/predict/iris")
echo "    response: $ANSWER"
case "$ANSWER" in *'"predictions"'*) ;; *) echo "no prediction in the answer" >&2; exit 1 ;; esac
echo "==> done in $(( $(date +%s) - T0 )) s"
