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
WORK=/opt/lenstrt && mkdir -p $WORK && cd $WORK
python3 -m venv venv && . venv/bin/activate
pip install -q --upgrade pip
pip install -q "{{LENSTRT_SPEC}}"
lenstrt info
aws s3 sync "{{BUNDLE_S3}}" bundle_src
aws s3 sync "{{INPUT_S3}}" input
# Engines are tied to the GPU model and TensorRT version: build them here, on this instance's own GPU.
lenstrt export --checkpoint bundle_src/checkpoints --fp16 --fuse --require-trt --out bundle -q
# serve resumes from its ledger, so a restarted instance continues where the last one stopped
aws s3 sync "{{OUT_S3}}/serve" out || true
lenstrt serve --bundle bundle --input input --out out {{SERVE_ARGS}} -q
aws s3 sync out "{{OUT_S3}}/serve"
echo "lenstrt job $JOB done"
