"""Cloud runs install the lenstrt the user runs (issue #14): a wheel of this version, built here and
shipped with the job; a spec the instance could not install fails at launch."""

import base64
import zipfile

import pytest
import yaml

from lenstrt import __version__
from lenstrt.cloud import package

pytestmark = pytest.mark.usefixtures("fake_credentials")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    return package.build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_is_this_version_and_carries_the_bootstrap(wheel):
    assert wheel.name.startswith(f"lenstrt-{__version__}-") and wheel.suffix == ".whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "lenstrt/cloud/bootstrap.sh" in names and "lenstrt/cloud/prices.csv" in names
    assert "lenstrt/serve/control.py" in names


def test_specs_resolve_or_fail_at_launch(wheel, tmp_path):
    i = package.resolve(str(wheel), tmp_path)
    assert i.wheel == wheel and i.pip_arg("/opt/w") == f"/opt/w/{wheel.name}[trt,gpu]"
    with pytest.raises(package.PackageError, match="not a wheel file"):
        package.resolve(str(tmp_path), tmp_path)
    # the old default: lenstrt is not on PyPI, so an instance could never install it
    with pytest.raises(package.PackageError, match=r"cannot be installed .*ship this machine's lenstrt"):
        package.resolve("lenstrt-no-such-package-xyz[trt,gpu]==9.9.9", tmp_path)


def test_launch_ships_the_wheel_and_the_instance_installs_it(bundle_dir, moto_url, wheel):
    import boto3

    from lenstrt.cloud import aws

    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket="wheel-bucket")
    r = aws.launch("g6.xlarge", str(bundle_dir), "s3://survey/cutouts", "s3://wheel-bucket/run1", ami="ami-12345678",
                   job="jw", lenstrt_spec=str(wheel), endpoint_url=moto_url)
    key = f"lenstrt/jobs/jw/{wheel.name}"
    assert r["lenstrt"]["wheel"] == f"s3://wheel-bucket/{key}"
    head = boto3.client("s3", endpoint_url=moto_url).head_object(Bucket="wheel-bucket", Key=key)
    assert head["ContentLength"] == wheel.stat().st_size
    ec2 = boto3.client("ec2", endpoint_url=moto_url)
    ud = base64.b64decode(ec2.describe_instance_attribute(InstanceId=r["instance_id"],
                                                          Attribute="userData")["UserData"]["Value"]).decode()
    assert f'pip install -q "/opt/lenstrt/wheels/{wheel.name}[trt,gpu]"' in ud
    assert f'WHEEL_S3="s3://wheel-bucket/{key}"' in ud and "{{" not in ud
    assert "kill -TERM $SERVE" in ud and 'aws s3 sync out "s3://wheel-bucket/run1/serve"' in ud


def test_a_bad_spec_fails_before_anything_is_started(bundle_dir, moto_url):
    import boto3

    from lenstrt.cloud import aws

    with pytest.raises(package.PackageError):
        aws.launch("g6.xlarge", str(bundle_dir), "s3://survey/cutouts", "s3://wheel-bucket/run2", ami="ami-12345678",
                   job="jbad", lenstrt_spec="lenstrt-no-such-package-xyz==9.9.9", endpoint_url=moto_url)
    running = boto3.client("ec2", endpoint_url=moto_url).describe_instances(
        Filters=[{"Name": "tag:lenstrt:job", "Values": ["jbad"]}])["Reservations"]
    assert running == []


def test_skypilot_task_mounts_the_wheel(wheel):
    from lenstrt.cloud.skypilot import task, to_yaml

    spec = yaml.safe_load(to_yaml(task("L4:1", "s3://b/bundle", "s3://b/in", "s3://b/out",
                                       install=package.Install(wheel, "", __version__))))
    assert spec["file_mounts"][f"/lenstrt/wheels/{wheel.name}"] == str(wheel.resolve())
    assert spec["envs"]["LENSTRT_SPEC"] == f"/lenstrt/wheels/{wheel.name}[trt,gpu]"
