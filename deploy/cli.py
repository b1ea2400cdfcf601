"""``inferq-provision``: create (up) or delete (down) the cluster's AWS resources.

    inferq-provision up --admin-cidr 203.0.113.7/32 [--workers 5] [--dry-run]
    inferq-provision down [--dry-run]

boto3 finds credentials and the region the usual way (AWS_PROFILE,
AWS_DEFAULT_REGION ...; AWS_ENDPOINT_URL points it at another EC2 endpoint).
"""
from __future__ import annotations

import argparse
import ipaddress
import sys

from inferq.deploy import settings
from inferq.deploy.errors import DeployError
from inferq.deploy.provision import Options, down, up


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="inferq-provision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", default=settings.CLUSTER,
                        help="value of the inferq:cluster tag (default %(default)s)")
    parser.add_argument("--region", default=None, help=f"AWS region (default: boto3's, else {settings.REGION})")
    parser.add_argument("--secrets-dir", default=settings.SECRETS_DIR,
                        help="where the private key goes (default %(default)s)")
    parser.add_argument("--inventory", default=settings.INVENTORY, help="inventory file to write (default %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("up", help="create or find everything, wait, write the inventory")
    make.add_argument("--admin-cidr", required=True, type=cidr,
                      help="the only addresses allowed to SSH and Flower, e.g. your IP/32")
    make.add_argument("--api-cidr", default=settings.API_CIDR, type=cidr,
                      help="who may reach the API (default %(default)s)")
    make.add_argument("--workers", type=int, default=settings.WORKERS, help="worker instances (default %(default)s)")
    make.add_argument("--orchestrator-type", default=settings.ORCHESTRATOR_TYPE, help="(default %(default)s)")
    make.add_argument("--worker-type", default=settings.WORKER_TYPE, help="(default %(default)s)")
    make.add_argument("--ami-owner", default=settings.AMI_OWNER, help="(default %(default)s, Canonical)")
    make.add_argument("--ami-name", default=settings.AMI_NAME, help="AMI name pattern (default %(default)s)")
    for sub in (make, commands.add_parser("down", help="delete everything tagged with the cluster")):
        sub.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS,
                         help="print the plan; change nothing")
    return parser.parse_args(argv)


def cidr(value: str) -> str:
    """An IPv4 network in CIDR form."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a CIDR such as 203.0.113.7/32") from None


def ec2_client(region: str | None):
    """An EC2 client; boto3 picks credentials, region and AWS_ENDPOINT_URL from its usual sources."""
    import boto3

    session = boto3.session.Session()
    return session.client("ec2", region_name=region or session.region_name or settings.REGION)


def main(argv: list[str] | None = None) -> int:
    """Run up or down; AWS failures end as one line on stderr and exit status 1."""
    args = parse_args(argv)
    try:
        ec2 = ec2_client(args.region)
        common = dict(cluster=args.cluster, region=ec2.meta.region_name, secrets_dir=args.secrets_dir,
                      inventory=args.inventory)
        if args.command == "up":
            if ipaddress.ip_network(args.admin_cidr).prefixlen == 0:
                raise DeployError("--admin-cidr must not be the whole Internet: SSH and Flower would be open to all")
            if args.workers < 1:
                raise DeployError("--workers must be at least 1")
            options = Options(workers=args.workers, orchestrator_type=args.orchestrator_type,
                              worker_type=args.worker_type, admin_cidr=args.admin_cidr, api_cidr=args.api_cidr,
                              ami_owner=args.ami_owner, ami_name=args.ami_name, **common)
            up(ec2, options, args.dry_run, print)
        else:
            down(ec2, Options(**common), args.dry_run, print)
    except DeployError as exc:
        print(f"inferq-provision: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
