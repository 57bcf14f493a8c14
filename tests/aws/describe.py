"""What moto holds, as JSON on stdout, read with boto3 (the official AWS SDK) so the tests see
the plugin's work through an independent client. tests/support/moto.rs runs it.

    describe.py instances --region us-east-1 [--filters '[{"Name": "tag:k", "Values": ["v"]}]']
        every instance matching the filters, all pages, as a list of
        {"InstanceId", "InstanceType", "ImageId", "State", "ClientToken", "Tags": {key: value},
         "KeyName", "PrivateIpAddress", "PublicIpAddress", "LaunchTime"}
    describe.py image --region us-east-1 --owner amazon --name NAME
        the one image of that owner and name (DescribeImages' Owners and name filter, as a
        plugin looks an image up) as {"ImageId", "Name", "OwnerId", "ImageOwnerAlias"};
        fails when there is not exactly one

The endpoint and key come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
(what tests/aws/moto_server.py writes). A refused request ends it with status 1 and the
error on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


def ec2(region: str):
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if not os.environ.get(name):
            raise SystemExit(f"describe.py: {name} is not set")
    # The caller checks what is there now: a failed request is reported, not retried.
    return boto3.client(
        "ec2", region_name=region, config=Config(retries={"total_max_attempts": 1})
    )


def instances(region: str, filters: list[dict]) -> list[dict]:
    found = []
    pages = ec2(region).get_paginator("describe_instances").paginate(Filters=filters)
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                found.append(
                    {
                        "InstanceId": instance["InstanceId"],
                        "InstanceType": instance.get("InstanceType"),
                        "ImageId": instance.get("ImageId"),
                        "State": instance.get("State", {}).get("Name"),
                        "ClientToken": instance.get("ClientToken"),
                        "Tags": {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])},
                        "KeyName": instance.get("KeyName"),
                        "PrivateIpAddress": instance.get("PrivateIpAddress"),
                        "PublicIpAddress": instance.get("PublicIpAddress"),
                        "LaunchTime": instance["LaunchTime"].isoformat()
                        if instance.get("LaunchTime")
                        else None,
                    }
                )
    return found


def image(region: str, owner: str, name: str) -> dict:
    images = ec2(region).describe_images(
        Owners=[owner], Filters=[{"Name": "name", "Values": [name]}]
    )["Images"]
    if len(images) != 1:
        ids = [found["ImageId"] for found in images]
        raise SystemExit(
            f"describe.py: {len(images)} images of owner {owner} named {name} in {region}: {ids}"
        )
    found = images[0]
    return {
        "ImageId": found["ImageId"],
        "Name": found.get("Name"),
        "OwnerId": found.get("OwnerId"),
        "ImageOwnerAlias": found.get("ImageOwnerAlias"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("instances")
    listing.add_argument("--region", required=True)
    listing.add_argument("--filters", type=json.loads, default=[], help="DescribeInstances' Filters")
    lookup = commands.add_parser("image")
    lookup.add_argument("--region", required=True)
    lookup.add_argument("--owner", required=True)
    lookup.add_argument("--name", required=True)
    args = parser.parse_args()
    try:
        if args.command == "instances":
            result = instances(args.region, args.filters)
        else:
            result = image(args.region, args.owner, args.name)
    except (ClientError, BotoCoreError) as error:
        print(f"describe.py: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
