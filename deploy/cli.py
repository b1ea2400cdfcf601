"""``inferq-provision``: create (up) or delete (down) the cluster's AWS resources.

    inferq-provision up --admin-cidr 203.0.113.7/32 [--workers 5] [--ha] [--dry-run]
    inferq-provision down [--dry-run] [--keep-secrets]

`up` makes one orchestrator and worker-1..N; with --ha two orchestrators
(orchestrator, orchestrator-2: Redis replicated, three Sentinels, the third on
worker-1), which needs a fixed worker-1 (docs/deploy.md, "Provisioning the --ha
layout").

boto3 finds credentials the usual way (AWS_PROFILE, AWS_ACCESS_KEY_ID ...;
AWS_ENDPOINT_URL points it at another endpoint). The region and cluster come
from the inventory when there is one, else from --region/--cluster, else boto3's.
"""
from __future__ import annotations

import argparse
import ipaddress
import sys

from inferq.deploy import autoscaling, backlog, defaults, logs, target
from inferq.deploy.aws import clients
from inferq.deploy.errors import DeployError
from inferq.deploy.options import Options
from inferq.deploy.provision import HA_NEEDS_A_WORKER, up
from inferq.deploy.teardown import down


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="inferq-provision", description=__doc__.split("\n\n")[0])
    add_common(parser, None)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("up", help="pre-flight, create or find everything, wait, write the inventory")
    make.add_argument("--admin-cidr", required=True, type=cidr,
                      help="the only addresses allowed to SSH (and through it Flower), e.g. your IP/32")
    make.add_argument("--api-cidr", default=defaults.API_CIDR, type=cidr,
                      help="who may reach the API's TLS port (default %(default)s)")
    make.add_argument("--workers", type=int, default=defaults.WORKERS,
                      help="worker instances (default %(default)s); with --min/--max-workers, the group's first size")
    make.add_argument("--min-workers", type=int, default=None,
                      help="worker hosts in an Auto Scaling group, at least this many (default without either flag: "
                           "no group, --workers fixed hosts; with --max-workers only: 1)")
    make.add_argument("--max-workers", type=int, default=None,
                      help="the group's most hosts (with --min-workers only: 20)")
    make.add_argument("--ha", action="store_true",
                      help="two orchestrators (orchestrator, orchestrator-2), Redis replicated and watched by three "
                           "Sentinels, the third with a second replica on worker-1: needs --workers 1 or more (with "
                           "--min/--max-workers, worker-1 is made as a fixed host beside the group)")
    make.add_argument("--target-wait-seconds", type=float, default=backlog.TARGET_WAIT_SECONDS,
                      help="the group's backlog target: a queued text waits about this long (default %(default)s; "
                           "target BacklogPerWorker = --texts-per-second-per-worker x this)")
    make.add_argument("--texts-per-second-per-worker", type=float, default=backlog.TEXTS_PER_SECOND_PER_WORKER,
                      help="one worker's speed in the capacity model (default %(default)s, docs/capacity.md)")
    make.add_argument("--orchestrator-type", default=defaults.ORCHESTRATOR_TYPE, help="(default %(default)s)")
    make.add_argument("--worker-type", default=defaults.WORKER_TYPE, help="(default %(default)s)")
    make.add_argument("--ami-owner", default=defaults.AMI_OWNER, help="workers' AMI owner (default %(default)s, "
                                                                      "Canonical)")
    make.add_argument("--ami-name", default=defaults.AMI_NAME, help="workers' AMI name pattern (default %(default)s)")
    make.add_argument("--orchestrator-ami-owner", default=defaults.ORCHESTRATOR_AMI_OWNER,
                      help="(default %(default)s, Debian)")
    make.add_argument("--orchestrator-ami-name", default=defaults.ORCHESTRATOR_AMI_NAME,
                      help="orchestrator's AMI name pattern: its python3 must be "
                           f"{defaults.PYTHON_VERSION} (default %(default)s)")
    make.add_argument("--host-key-wait", type=float, default=defaults.HOST_KEY_WAIT_SECONDS,
                      help="seconds to wait for new hosts to print their SSH host keys on the console "
                           "(default %(default)s)")
    remove = commands.add_parser("down", help="delete everything tagged with the cluster, in its region")
    remove.add_argument("--keep-secrets", action="store_true",
                        help="keep secrets/<cluster>/cluster-secrets.json (default: removed, so a new cluster of "
                             "the same name gets new passwords)")
    for sub in (make, remove):
        add_common(sub, argparse.SUPPRESS)  # the same options after the command: `up --region eu-west-1`
    return parser.parse_args(argv)


def add_common(parser: argparse.ArgumentParser, suppress: str | None) -> None:
    """The options `up` and `down` share; suppress: after the command, leave a value given before it alone."""
    def default(value):
        return suppress if suppress else value

    parser.add_argument("--cluster", default=default(None),
                        help=f"value of the inferq:cluster tag (default: the inventory's, else {defaults.CLUSTER})")
    parser.add_argument("--region", default=default(None),
                        help=f"AWS region (default: the inventory's, else boto3's, else {defaults.REGION})")
    parser.add_argument("--secrets-dir", default=default(defaults.SECRETS_DIR),
                        help=f"where the private key goes (default {defaults.SECRETS_DIR})")
    parser.add_argument("--inventory", default=default(defaults.INVENTORY),
                        help=f"inventory file; the pinned host keys go beside it (default {defaults.INVENTORY})")
    parser.add_argument("--dry-run", action="store_true", default=default(False),
                        help="pre-flight and print the plan; change nothing")


def fixed_workers(workers: int, group: autoscaling.Group | None, ha: bool) -> int:
    """How many fixed worker hosts (worker-1..N) `up` makes: --workers, or with a group none (--workers is then the
    group's first size), except that --ha keeps worker-1 fixed beside the group: the standby host runs the third
    Sentinel and Redis's second replica, and a group may replace or remove any of its hosts at any time."""
    if group is None:
        return workers
    return 1 if ha else 0


def cidr(value: str) -> str:
    """An IPv4 network in CIDR form."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a CIDR such as 203.0.113.7/32") from None


def main(argv: list[str] | None = None) -> int:
    """Run up or down; every failure ends as one line on stderr and exit status 1."""
    args = parse_args(argv)
    logs.to_stdout()  # retries are reported as they happen, beside the progress lines
    try:
        where = target.resolve(args.command, args.cluster, args.region, args.inventory)
        common = dict(cluster=where.cluster, region=where.region, secrets_dir=args.secrets_dir,
                      inventory=args.inventory)
        if args.command == "up":
            if ipaddress.ip_network(args.admin_cidr).prefixlen == 0:
                raise DeployError("--admin-cidr must not be the whole Internet: SSH would be open to all")
            if args.ha and args.workers < 1:
                raise DeployError(HA_NEEDS_A_WORKER)  # the reason, rather than the general rule below
            if args.workers < 1:
                raise DeployError("--workers must be at least 1")
            if args.target_wait_seconds <= 0 or args.texts_per_second_per_worker <= 0:
                raise DeployError("--target-wait-seconds and --texts-per-second-per-worker must be positive")
            group = autoscaling.group_from_options(
                args.workers, args.min_workers, args.max_workers, target_wait_seconds=args.target_wait_seconds,
                texts_per_second_per_worker=args.texts_per_second_per_worker)
            options = Options(workers=fixed_workers(args.workers, group, args.ha), autoscale=group, ha=args.ha,
                              orchestrator_type=args.orchestrator_type,
                              worker_type=args.worker_type, admin_cidr=args.admin_cidr, api_cidr=args.api_cidr,
                              ami_owner=args.ami_owner, ami_name=args.ami_name,
                              orchestrator_ami_owner=args.orchestrator_ami_owner,
                              orchestrator_ami_name=args.orchestrator_ami_name, **common)
            up(clients.connect(where.region), options, args.dry_run, print, args.host_key_wait)
        else:
            down(clients.connect(where.region), Options(**common), args.dry_run, print, args.keep_secrets)
    except DeployError as exc:
        print(f"inferq-provision: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
