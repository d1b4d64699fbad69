#!/bin/bash
# lenstrt cloud bootstrap (EC2 user data). Filled in by `lenstrt cloud launch`; no credentials in here:
# the instance reaches S3 through its IAM instance profile.
set -euxo pipefail
exec > >(tee /var/log/lenstrt-bootstrap.log | logger -t lenstrt -s 2>/dev/console) 2>&1
# Hard limit: whatever happens, the machine powers off (and, with shutdown behaviour 'terminate', is gone).
shutdown -h +{{MAX_MINUTES}} "lenstrt max-hours limit"
finish() { aws s3 cp /var/log/lenstrt-bootstrap.log "{{OUT_S3}}/bootstrap.log" || true; shutdown -h now; }
trap finish EXIT
JOB="{{JOB}}"
WORK=/opt/lenstrt && mkdir -p $WORK/wheels && cd $WORK
python3 -m venv venv && . venv/bin/activate
pip install -q --upgrade pip
# The lenstrt the user launched with: its wheel travels with the job (lenstrt is not on PyPI).
WHEEL_S3="{{WHEEL_S3}}"
[ -n "$WHEEL_S3" ] && aws s3 cp "$WHEEL_S3" wheels/
pip install -q "{{PIP_INSTALL}}"
lenstrt info
aws s3 sync "{{BUNDLE_S3}}" bundle_src
aws s3 sync "{{INPUT_S3}}" input
# Engines are tied to the GPU model and TensorRT version: build them here, on this instance's own GPU.
lenstrt export --checkpoint bundle_src/checkpoints --fp16 --fuse --require-trt --out bundle -q
# A replacement instance resumes from what earlier ones committed to --out (serve's ledger).
aws s3 sync "{{OUT_S3}}/serve" out || true
lenstrt serve --bundle bundle --input input --out out {{SERVE_ARGS}} -q &
SERVE=$!
# Spot: AWS posts the interruption notice about two minutes ahead in the instance metadata (IMDSv2), and
# the OS sends SIGTERM at shutdown. Either way serve gets SIGTERM, finishes the units in progress,
# commits them and exits 143; what it committed is synced below, before the machine goes.
(
  while kill -0 $SERVE 2>/dev/null; do
    TOKEN=$(curl -s -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 60" || true)
    if curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/spot/instance-action >/dev/null; then
      kill -TERM $SERVE; break
    fi
    sleep 5
  done
) &
WATCH=$!
trap 'kill -TERM $SERVE 2>/dev/null || true' TERM INT
set +e
while kill -0 $SERVE 2>/dev/null; do wait $SERVE; RC=$?; done
wait $SERVE 2>/dev/null; RC=${RC:-$?}
set -e
kill $WATCH 2>/dev/null || true
aws s3 sync out "{{OUT_S3}}/serve"
[ "$RC" -eq 0 ] || { echo "lenstrt serve stopped with exit code $RC; a new instance resumes from {{OUT_S3}}/serve"; exit "$RC"; }
echo "lenstrt job $JOB done"
