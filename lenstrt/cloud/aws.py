"""AWS via boto3 (the only module importing it): S3 upload of bundles, spot/on-demand launch with a
bootstrap user-data script, status, logs and terminate of lenstrt's own (tagged) instances, and live
prices. Credentials come from boto3's standard chain; they are never printed, logged or put in user
data (the instance uses its IAM instance profile)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lenstrt.errors import LenstrtError

TAG = "lenstrt"
_BOOTSTRAP = Path(__file__).resolve().parent / "bootstrap.sh"  # package data: wheels carry it too
_SECRET = re.compile(r"(AKIA|ASIA)[A-Z0-9]{16}|aws_secret_access_key\s*=\s*\S+", re.I)


class CloudError(LenstrtError):
    """An AWS call failed; the message is AWS's code and text on one line."""


def redact(text: str) -> str:
    return _SECRET.sub("[REDACTED]", text)


def _client(service: str, region: str | None, endpoint_url: str | None = None):
    try:
        import boto3
    except ImportError as exc:
        raise CloudError("boto3 is not installed: pip install 'lenstrt[cloud]'") from exc
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url)


def _call(fn, *args, **kwargs):
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return fn(*args, **kwargs)
    except NoCredentialsError as exc:
        raise CloudError("no AWS credentials found (boto3 chain: env, ~/.aws, instance profile); "
                         "configure them with `aws configure` or AWS_PROFILE") from exc
    except ClientError as exc:
        err = exc.response.get("Error", {})
        hint = {"InsufficientInstanceCapacity": "try another region/zone, instance type, or on-demand",
                "SpotMaxPriceTooLow": "raise the spot price or use on-demand",
                "VcpuLimitExceeded": "request a quota increase for this instance family",
                "MaxSpotInstanceCountExceeded": "request a spot quota increase",
                "UnauthorizedOperation": "your IAM identity lacks permission for this call",
                "InvalidAMIID.NotFound": "pass --ami with an AMI that exists in this region"}.get(err.get("Code", ""), "")
        msg = f"AWS {err.get('Code', 'error')}: {err.get('Message', str(exc))}" + (f" ({hint})" if hint else "")
        raise CloudError(redact(msg.replace("\n", " "))) from exc
    except BotoCoreError as exc:
        raise CloudError(redact(f"AWS: {exc}")) from exc


def parse_s3(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise CloudError(f"{url}: expected an s3://bucket/prefix URL")
    bucket, _, key = url[5:].partition("/")
    return bucket, key.rstrip("/")


def upload_dir(local: str | Path, s3_url: str, region: str | None = None, endpoint_url: str | None = None) -> list[str]:
    s3 = _client("s3", region, endpoint_url)
    bucket, prefix = parse_s3(s3_url)
    keys = []
    for f in sorted(Path(local).rglob("*")):
        if f.is_file():
            key = f"{prefix}/{f.relative_to(local).as_posix()}".lstrip("/")
            _call(s3.upload_file, str(f), bucket, key)
            keys.append(key)
    return keys


def user_data(job: str, bundle_s3: str, input_s3: str, out_s3: str, max_hours: float, pip_install: str,
              serve_args: str = "", wheel_s3: str = "") -> str:
    """The bootstrap script (lenstrt/cloud/bootstrap.sh) with the job's values filled in."""
    text = _BOOTSTRAP.read_text()
    values = {"JOB": job, "BUNDLE_S3": bundle_s3, "INPUT_S3": input_s3, "OUT_S3": out_s3,
              "MAX_MINUTES": str(int(max_hours * 60)), "PIP_INSTALL": pip_install, "SERVE_ARGS": serve_args,
              "WHEEL_S3": wheel_s3}
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", v)
    return text


def launch(instance_type: str, bundle: str, input_s3: str, out_s3: str, *, spot: bool = True, ami: str | None = None,
           region: str | None = None, max_hours: float = 12.0, job: str | None = None,
           iam_instance_profile: str | None = None, key_name: str | None = None,
           lenstrt_spec: str | None = None, serve_args: str = "", endpoint_url: str | None = None,
           work: Path | None = None) -> dict[str, Any]:
    """`lenstrt_spec` None ships a wheel of the running lenstrt (cloud/package.py); it is resolved before
    anything is uploaded or started, so a spec the instance could not install fails here."""
    import tempfile

    from lenstrt.cloud.package import resolve

    job = job or f"lenstrt-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    # Everything that can fail is checked before anything is uploaded or started.
    if not bundle.startswith("s3://") and not (Path(bundle) / "manifest.json").is_file():
        raise CloudError(f"{bundle}: not a bundle directory (no manifest.json) and not an s3:// URL")
    install = resolve(lenstrt_spec, work or Path(tempfile.mkdtemp(prefix="lenstrt-wheel-")))
    ec2 = _client("ec2", region, endpoint_url)
    if ami is None:
        ssm = _client("ssm", region, endpoint_url)
        name = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
        try:
            ami = _call(ssm.get_parameter, Name=name)["Parameter"]["Value"]
        except CloudError as exc:
            raise CloudError(f"could not resolve the Deep Learning AMI ({exc}); pass --ami") from exc
    bucket, _ = parse_s3(out_s3)
    wheel_s3 = ""
    if install.wheel is not None:
        wheel_s3 = f"s3://{bucket}/lenstrt/jobs/{job}/{install.wheel.name}"
        _call(_client("s3", region, endpoint_url).upload_file, str(install.wheel), bucket,
              f"lenstrt/jobs/{job}/{install.wheel.name}")
    if not bundle.startswith("s3://"):
        dest = f"s3://{bucket}/lenstrt/bundles/{job}"
        upload_dir(bundle, dest, region, endpoint_url)
        bundle = dest
    params: dict[str, Any] = {
        "ImageId": ami, "InstanceType": instance_type, "MinCount": 1, "MaxCount": 1,
        "UserData": user_data(job, bundle, input_s3, out_s3, max_hours, install.pip_arg("/opt/lenstrt/wheels"),
                              serve_args, wheel_s3),
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [
            {"Key": TAG, "Value": "1"}, {"Key": f"{TAG}:job", "Value": job}, {"Key": "Name", "Value": job},
            {"Key": f"{TAG}:max-hours", "Value": str(max_hours)}, {"Key": f"{TAG}:out", "Value": out_s3}]}],
    }
    if spot:
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    if iam_instance_profile:
        params["IamInstanceProfile"] = {"Name": iam_instance_profile}
    if key_name:
        params["KeyName"] = key_name
    res = _call(ec2.run_instances, **params)
    inst = res["Instances"][0]
    return {"job": job, "instance_id": inst["InstanceId"], "instance_type": instance_type, "spot": spot,
            "bundle": bundle, "input": input_s3, "out": out_s3, "max_hours": max_hours, "ami": ami,
            "lenstrt": {"version": install.version, "wheel": wheel_s3 or None, "requirement": install.requirement or None}}


def status(region: str | None = None, endpoint_url: str | None = None) -> list[dict[str, Any]]:
    ec2 = _client("ec2", region, endpoint_url)
    res = _call(ec2.describe_instances, Filters=[{"Name": f"tag:{TAG}", "Values": ["1"]}])
    out = []
    for r in res["Reservations"]:
        for i in r["Instances"]:
            tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
            out.append({"instance_id": i["InstanceId"], "job": tags.get(f"{TAG}:job"), "type": i["InstanceType"],
                        "state": i["State"]["Name"], "spot": i.get("InstanceLifecycle") == "spot",
                        "launched": str(i.get("LaunchTime")), "out": tags.get(f"{TAG}:out")})
    return out


def logs(instance_id: str, region: str | None = None, endpoint_url: str | None = None) -> str:
    ec2 = _client("ec2", region, endpoint_url)
    _own(ec2, [instance_id])
    out = _call(ec2.get_console_output, InstanceId=instance_id).get("Output", "")  # boto3 decodes base64
    return redact(out or "(no console output yet)")


def _own(ec2, ids: list[str]) -> None:
    res = _call(ec2.describe_instances, InstanceIds=ids)
    for r in res["Reservations"]:
        for i in r["Instances"]:
            tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
            if tags.get(TAG) != "1":
                raise CloudError(f"{i['InstanceId']} is not a lenstrt instance (no '{TAG}' tag); refusing to touch it")


def terminate(ids: list[str], region: str | None = None, endpoint_url: str | None = None) -> list[str]:
    ec2 = _client("ec2", region, endpoint_url)
    if not ids:
        ids = [s["instance_id"] for s in status(region, endpoint_url) if s["state"] not in ("terminated", "shutting-down")]
        if not ids:
            return []
    _own(ec2, ids)
    res = _call(ec2.terminate_instances, InstanceIds=ids)
    return [i["InstanceId"] for i in res["TerminatingInstances"]]


_LOCATIONS = {"us-east-1": "US East (N. Virginia)", "us-east-2": "US East (Ohio)", "us-west-2": "US West (Oregon)",
              "eu-west-1": "EU (Ireland)", "eu-central-1": "EU (Frankfurt)"}


def live_prices(instances: list[str], region: str = "us-east-1", endpoint_url: str | None = None) -> dict[str, dict]:
    """On-demand (Pricing API get_products) and current spot (describe_spot_price_history) prices."""
    pricing = _client("pricing", "us-east-1", endpoint_url)  # the Pricing API lives in us-east-1
    ec2 = _client("ec2", region, endpoint_url)
    out: dict[str, dict] = {}
    for inst in instances:
        res = _call(pricing.get_products, ServiceCode="AmazonEC2", MaxResults=10, Filters=[
            {"Type": "TERM_MATCH", "Field": "instanceType", "Value": inst},
            {"Type": "TERM_MATCH", "Field": "location", "Value": _LOCATIONS.get(region, region)},
            {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
            {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
            {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
            {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"}])
        od = None
        for item in res.get("PriceList", []):
            doc = json.loads(item) if isinstance(item, str) else item
            for term in doc.get("terms", {}).get("OnDemand", {}).values():
                for dim in term.get("priceDimensions", {}).values():
                    usd = float(dim["pricePerUnit"].get("USD", 0))
                    if usd > 0:
                        od = usd
        hist = _call(ec2.describe_spot_price_history, InstanceTypes=[inst], ProductDescriptions=["Linux/UNIX"],
                     StartTime=datetime.now(timezone.utc), MaxResults=20)
        spots = sorted(float(h["SpotPrice"]) for h in hist.get("SpotPriceHistory", []))
        out[inst] = {"on_demand_usd_h": od, "spot_usd_h": spots[len(spots) // 2] if spots else None}
    return out
