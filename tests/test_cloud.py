"""Cloud tests run offline: AWS calls go to a moto server on 127.0.0.1 (the real HTTP API), prices
through botocore's Stubber (moto has no Pricing API)."""

import base64
import json

import pytest
import yaml

from lenstrt.cloud import aws
from lenstrt.cloud.estimate import bench_throughput, estimate
from lenstrt.cloud.skypilot import task, to_yaml
from lenstrt.io import sha256_file

pytestmark = pytest.mark.usefixtures("fake_credentials")


def test_estimate_from_assumptions_and_bench(tmp_path):
    rows = estimate(1.5e9, ["g4dn.xlarge", "p4d.24xlarge"])
    g4 = next(r for r in rows if r.instance == "g4dn.xlarge")
    assert g4.img_s == 6000 and g4.hours == pytest.approx(1.5e9 / 6000 / 3600)
    assert g4.on_demand_usd == pytest.approx(g4.hours * 0.526) and "assumption" in g4.throughput_source
    p4 = next(r for r in rows if r.instance == "p4d.24xlarge")
    assert p4.gpus == 8 and p4.img_s == 8 * 28000
    bench = {"env": {"cpu": "Xeon", "cpu_cores": 2, "gpus": "none"},
             "rows": [{"ok": True, "label": "ort fused b64", "images_per_s": 200.0},
                      {"ok": True, "label": "ort member:x b64", "member": "x", "images_per_s": 900.0},
                      {"ok": False, "label": "trt", "error": "x"}]}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    assert bench_throughput(tmp_path / "bench.json") == (200.0, "measured on Xeon x2 (ort fused b64)")
    rows = estimate(1e6, ["g6.xlarge"], bench=str(tmp_path / "bench.json"))
    assert rows[0].hours == pytest.approx(1e6 / 200 / 3600)


def test_s3_round_trip_of_a_bundle(bundle_dir, moto_url, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_url)
    s3.create_bucket(Bucket="survey")
    keys = aws.upload_dir(bundle_dir, "s3://survey/bundles/b1", endpoint_url=moto_url)
    assert "bundles/b1/manifest.json" in keys
    for key in keys:
        rel = key.removeprefix("bundles/b1/")
        s3.download_file("survey", key, str(tmp_path / "x"))
        assert sha256_file(tmp_path / "x") == sha256_file(bundle_dir / rel)


def test_launch_status_logs_terminate(bundle_dir, moto_url):
    import boto3

    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket="out-bucket")
    boto3.client("iam", endpoint_url=moto_url).create_instance_profile(InstanceProfileName="lenstrt-s3")
    r = aws.launch("g6.xlarge", str(bundle_dir), "s3://survey/cutouts", "s3://out-bucket/run1", spot=True,
                   ami="ami-12345678", max_hours=3, job="job1", iam_instance_profile="lenstrt-s3",
                   endpoint_url=moto_url)
    assert r["bundle"] == "s3://out-bucket/lenstrt/bundles/job1"  # the local bundle was uploaded first
    ec2 = boto3.client("ec2", endpoint_url=moto_url)
    inst = ec2.describe_instances(InstanceIds=[r["instance_id"]])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["lenstrt"] == "1" and tags["lenstrt:job"] == "job1" and tags["lenstrt:max-hours"] == "3"
    attr = ec2.describe_instance_attribute(InstanceId=r["instance_id"], Attribute="instanceInitiatedShutdownBehavior")
    assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    ud = base64.b64decode(ec2.describe_instance_attribute(InstanceId=r["instance_id"],
                                                          Attribute="userData")["UserData"]["Value"]).decode()
    assert "shutdown -h +180" in ud and "--require-trt" in ud and "lenstrt serve" in ud
    assert "s3://out-bucket/lenstrt/bundles/job1" in ud and "{{" not in ud
    assert "AKIA" not in ud and "super/secret" not in ud  # credentials never go into user data
    other = ec2.run_instances(ImageId="ami-12345678", InstanceType="t3.micro", MinCount=1, MaxCount=1)
    other_id = other["Instances"][0]["InstanceId"]
    listed = aws.status(endpoint_url=moto_url)
    assert [s["instance_id"] for s in listed] == [r["instance_id"]]  # only lenstrt's own
    console = ec2.get_console_output(InstanceId=r["instance_id"]).get("Output", "")
    assert aws.logs(r["instance_id"], endpoint_url=moto_url) == (aws.redact(console) or "(no console output yet)")
    with pytest.raises(aws.CloudError, match="not a lenstrt instance"):
        aws.logs(other_id, endpoint_url=moto_url)  # refuses to read other instances' consoles
    with pytest.raises(aws.CloudError, match="not a lenstrt instance"):
        aws.terminate([other_id], endpoint_url=moto_url)
    assert aws.terminate([], endpoint_url=moto_url) == [r["instance_id"]]


def test_aws_errors_are_one_clean_line(moto_url):
    with pytest.raises(aws.CloudError) as ei:
        aws.terminate(["i-0000000000000dead"], endpoint_url=moto_url)
    assert ei.value.args[0].startswith("AWS InvalidInstanceID") and "\n" not in str(ei.value)
    with pytest.raises(aws.CloudError, match="pass --ami"):
        aws.launch("g6.xlarge", "s3://b/x", "s3://b/in", "s3://b/out", endpoint_url=moto_url)


def test_credential_redaction():
    text = "key AKIAABCDEFGHIJKLMNOP and aws_secret_access_key = abc/def"
    assert aws.redact(text) == "key [REDACTED] and [REDACTED]"


def test_live_prices_from_recorded_responses(monkeypatch):
    import boto3
    from botocore.stub import ANY, Stubber

    pricing = boto3.client("pricing", region_name="us-east-1")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    product = {"product": {"attributes": {"instanceType": "g6.xlarge"}},
               "terms": {"OnDemand": {"X.Y": {"priceDimensions": {"X.Y.Z": {"unit": "Hrs",
                                                                            "pricePerUnit": {"USD": "0.8048000000"}}}}}}}
    with Stubber(pricing) as sp, Stubber(ec2) as se:
        sp.add_response("get_products", {"PriceList": [json.dumps(product)], "FormatVersion": "aws_v1"},
                        {"ServiceCode": "AmazonEC2", "MaxResults": 10, "Filters": ANY})
        se.add_response("describe_spot_price_history", {"SpotPriceHistory": [
            {"InstanceType": "g6.xlarge", "SpotPrice": "0.31", "AvailabilityZone": "us-east-1a"},
            {"InstanceType": "g6.xlarge", "SpotPrice": "0.35", "AvailabilityZone": "us-east-1b"},
            {"InstanceType": "g6.xlarge", "SpotPrice": "0.29", "AvailabilityZone": "us-east-1c"}]},
            {"InstanceTypes": ["g6.xlarge"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY, "MaxResults": 20})
        monkeypatch.setattr(aws, "_client", lambda svc, region, endpoint_url=None: pricing if svc == "pricing" else ec2)
        out = aws.live_prices(["g6.xlarge"])
    assert out == {"g6.xlarge": {"on_demand_usd_h": pytest.approx(0.8048), "spot_usd_h": pytest.approx(0.31)}}


def test_skypilot_task_yaml():
    spec = yaml.safe_load(to_yaml(task("L4:1", "s3://b/bundle", "s3://b/in", "s3://b/out", spot=True)))
    r = spec["resources"]
    assert r["accelerators"] == "L4:1" and r["use_spot"] is True and r["autostop"] == {"idle_minutes": 10}
    assert [c["infra"] for c in r["any_of"]] == ["aws", "gcp", "azure"]
    assert spec["file_mounts"]["/lenstrt/out"] == {"source": "s3://b/out", "mode": "MOUNT"}
    assert "lenstrt export" in spec["run"] and "--require-trt" in spec["run"] and "lenstrt serve" in spec["run"]
    assert "pip install" in spec["setup"]


def test_estimate_cli_json_and_bad_instance():
    from click.testing import CliRunner

    from lenstrt.cli.main import cli

    res = CliRunner().invoke(cli, ["cloud", "estimate", "--cutouts", "1e6", "--instance", "g6.xlarge", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["rows"][0]["instance"] == "g6.xlarge" and "shipped table" in data["note"]
    res = CliRunner().invoke(cli, ["cloud", "estimate", "--cutouts", "1e6", "--instance", "m5.nope"])
    assert res.exit_code == 1 and "unknown instance(s) m5.nope" in res.output
