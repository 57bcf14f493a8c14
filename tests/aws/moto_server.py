"""moto (an independent fake of AWS) as a server with request authentication on, and an IAM
access key to sign requests with: what the AWS plugin is tested against.

    target/sdk-venv/bin/python tests/aws/moto_server.py --listen 127.0.0.1:8091 \
        --credentials .dev/moto.env

serves moto on the address, makes an IAM user with an inline policy allowing `ec2:*` and an
access key for it, checks that a request signed with that key is answered and one signed with
a wrong secret is refused (`AuthFailure`), then writes the credentials file and prints one
`ready` line. It keeps serving until SIGTERM or SIGINT. The file is shell-sourceable:

    AWS_ACCESS_KEY_ID=AKIA...
    AWS_SECRET_ACCESS_KEY=...
    AWS_ENDPOINT_URL=http://127.0.0.1:8091

scripts/moto.sh (the local stack) and tests/support/moto.rs (the Rust tests) both start moto
through this file, so there is one bootstrap.

How moto's authentication is switched on: with `INITIAL_NO_AUTH_ACTION_COUNT=N` in its
environment moto answers the first N AWS requests it gets (counted process-wide, whichever
service, whatever the outcome) without looking at their signatures, and checks the signature
and the IAM policy of every later one (moto/core/authorization.py). With N=0 nothing could
make the first access key: every request would need a signature by a key that does not exist
yet. So N is exactly the bootstrap's requests: CreateUser, PutUserPolicy, CreateAccessKey
(an access key needs a user; a key can sign nothing but what its user's policies allow, and
putting a policy takes IAM permissions the new user does not have). The readiness probe asks
`/moto-api/`, which moto does not count. Nothing else may reach the port before the bootstrap
is done, which holds for a port just picked by the caller on the loopback interface.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import urllib.request

# The unauthenticated requests the bootstrap makes; see the module's doc. moto reads this at
# import, so it is set before moto is imported.
BOOTSTRAP_REQUESTS = 3
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(BOOTSTRAP_REQUESTS)

# boto3 in this process must not pick up a developer's AWS profile or real credentials.
for _name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)

USER_NAME = "provisioner"
POLICY_NAME = "provisioner-ec2"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
}
REGION = "us-east-1"


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not HOST:PORT")
    return host, int(port)


def client(service: str, endpoint: str, key_id: str, secret: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        # One attempt: a retried bootstrap request would be counted twice.
        config=Config(retries={"total_max_attempts": 1}),
    )


def bootstrap(endpoint: str) -> tuple[str, str]:
    """Makes the user, its policy and its access key; the key's id and secret."""
    # The signatures of these requests are not checked; boto3 still wants a key to sign with.
    iam = client("iam", endpoint, "AKIAUNCHECKEDBOOTSTRAP", "unchecked")
    iam.create_user(UserName=USER_NAME)
    iam.put_user_policy(
        UserName=USER_NAME, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(POLICY)
    )
    key = iam.create_access_key(UserName=USER_NAME)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def check_authentication(endpoint: str, key_id: str, secret: str) -> None:
    """The key signs requests moto answers, and a wrong secret is refused."""
    from botocore.exceptions import ClientError

    client("ec2", endpoint, key_id, secret).describe_regions(RegionNames=[REGION])
    try:
        client("ec2", endpoint, key_id, secret[::-1] + "x").describe_regions()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code != "AuthFailure":
            raise RuntimeError(f"a wrong secret was refused with {code}, not AuthFailure") from error
    else:
        raise RuntimeError("moto answered a request signed with a wrong secret: auth is off")


def write_credentials(path: str, endpoint: str, key_id: str, secret: str) -> None:
    """Writes the file whole (a reader never sees half of it), readable by the owner only."""
    text = "".join(
        f"{name}={shlex.quote(value)}\n"
        for name, value in (
            ("AWS_ACCESS_KEY_ID", key_id),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_ENDPOINT_URL", endpoint),
        )
    )
    partial = f"{path}.partial"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(partial, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=parse_listen, required=True, help="HOST:PORT")
    parser.add_argument(
        "--credentials", required=True, help="the file the access key is written to when ready"
    )
    args = parser.parse_args()
    host, port = args.listen
    endpoint = f"http://{host}:{port}"
    # Some moto backends put the server's port into the URLs they hand out.
    os.environ["MOTO_PORT"] = str(port)
    try:
        os.remove(args.credentials)
    except FileNotFoundError:
        pass

    from werkzeug.serving import make_server

    from moto import __version__ as moto_version
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    # Bound here, before anything else, so a taken port fails at once.
    server = make_server(
        host,
        port,
        DomainDispatcherApplication(create_backend_app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    serving = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    serving.start()

    def stop(_signum, _frame):
        # shutdown() waits for serve_forever to return: not from the thread running it.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=30) as answer:
            answer.read()
        key_id, secret = bootstrap(endpoint)
        check_authentication(endpoint, key_id, secret)
        write_credentials(args.credentials, endpoint, key_id, secret)
    except Exception as error:  # noqa: BLE001 - any failure ends the server, with the reason
        print(f"moto_server.py: the bootstrap failed: {error!r}", file=sys.stderr, flush=True)
        server.shutdown()
        return 1
    print(
        f"moto {moto_version} ready on {endpoint} with request authentication on; "
        f"IAM user {USER_NAME} (ec2:*), access key {key_id} in {args.credentials}",
        flush=True,
    )
    while serving.is_alive():
        serving.join(timeout=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
