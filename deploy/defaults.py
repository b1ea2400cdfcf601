"""Defaults of the deploy tooling: its command-line options, AWS names and sizes, the hosts' layout.

Deploy-only values are command-line options (``inferq-provision --help``,
``fab -r deploy --help deploy``) whose defaults live here, not environment
variables in inferq.settings: they matter to the operator's machine only, and
no inferq process ever reads them. AWS credentials and the region are read by
boto3 itself (``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``).
"""

CLUSTER = "inferq"
"""Value of the cluster tag; everything provisioned carries it, and teardown deletes only what does."""

TAG_KEY = "inferq:cluster"
"""Tag key that marks a resource as part of a cluster."""

ROLE_TAG_KEY = "inferq:role"
"""Tag key saying what a resource is for (orchestrator, workers, key)."""

NAME_TAG_KEY = "inferq:name"
"""Tag key naming one instance (orchestrator, worker-1 ...); how a second run finds it."""

GROUP_TAG = "inferq:group"
"""Tag of the instances the worker Auto Scaling group launches (deploy.autoscaling): not worker-1..N."""

REGION = "us-east-1"
"""Region used when neither --region nor AWS_DEFAULT_REGION says otherwise."""

WORKERS = 5
"""Worker instances in the reference deployment (two containers each, ten in all)."""

CONTAINERS_PER_WORKER = 2
"""Worker containers (services in docker-compose.yml) per worker instance."""

ORCHESTRATOR_TYPE = "t3.small"
"""Redis, the API and Flower: 2 vCPU, 2 GiB; no inference runs there."""

WORKER_TYPE = "c6i.large"
"""2 vCPU, 4 GiB: one vCPU per single-threaded worker container, no oversubscription."""

ROOT_VOLUME_GB = 30
"""Root disk: the worker image with torch and a baked model is a few GiB, plus build cache."""

AMI_OWNER = "099720109477"
"""Canonical's AWS account: the images the workers' AMI lookup trusts."""

AMI_NAME = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
"""The workers: Ubuntu 24.04 LTS (docker.io and docker-compose-v2 packages); the newest match is used."""

SSH_USER = "ubuntu"
"""Login user of the Ubuntu images (passwordless sudo)."""

ORCHESTRATOR_AMI_OWNER = "136693071363"
"""Debian's AWS account: the images the orchestrator's AMI lookup trusts."""

ORCHESTRATOR_AMI_NAME = "debian-12-amd64-*"
"""The orchestrator: Debian 12, whose python3 is the 3.11 that constraints.txt is installed and tested with."""

ORCHESTRATOR_SSH_USER = "admin"
"""Login user of Debian's images (passwordless sudo)."""

PYTHON_VERSION = "3.11"
"""The Python the pins are tested with (the suite runs on it): the orchestrator's venvs must use it."""

API_PORT = 5000
"""Where gunicorn listens on the orchestrator: loopback only, behind the TLS proxy."""

HTTPS_PORT = 443
"""The API's public port: TLS (nginx), the API key required."""

API_CIDR = "0.0.0.0/0"
"""Who may reach the API's public port: anyone by default (the one port open to the world)."""

FLOWER_PORT = 5555
"""Flower, on the orchestrator's loopback: reached through an SSH tunnel only."""

REDIS_PORT = 6379
SSH_PORT = 22

SENTINEL_PORT = 26379
"""Redis Sentinel's port (TLS only), on each host that runs one: the --ha layout's two orchestrators and its
standby worker host (inventory.Inventory.sentinel_hosts)."""

HA_ORCHESTRATORS = ("orchestrator", "orchestrator-2")
"""The orchestrators' names in the --ha layout: the first starts as the Redis primary and runs Flower."""

REDIS_MEMORY_FRACTION = 0.4
"""Redis's maxmemory as a share of the orchestrator's memory: the rest is for the API, Flower,
nginx and the copy-on-write pages of the AOF rewrite's fork (up to Redis's size again)."""

IMDS_HOP_LIMIT = 1
"""IMDSv2 tokens travel one hop: a worker container (one more hop, its bridge) cannot use the metadata service."""

VCPU_QUOTA_CODE = "L-1216C47A"
"""Service Quotas' code of "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", in vCPUs."""

SSH_CONNECT_ATTEMPTS = 5
"""Connection attempts to a host before giving up (a host still booting refuses for a while)."""

SSH_RETRY_SECONDS = 1.0
"""First wait between SSH connection attempts; it doubles (1, 2, 4, 8 s: 15 s in all)."""

SSH_CONNECT_SECONDS = 20
"""How long one SSH connection attempt may take (a host far away, or busy booting)."""

PROBE_SECONDS = 5
"""How long `fab status` gives an orchestrator to take a connection (SSH, once; the API's port) before it says
so and asks the other (--ha): a host that is gone would otherwise cost every SSH attempt's connect timeout
(about 100 s) before status moves on."""

AWS_MAX_ATTEMPTS = 8
"""Attempts botocore makes of one AWS call (its "standard" retry mode: throttling, 5xx, timeouts), backing off."""

HOST_KEY_WAIT_SECONDS = 300
"""How long `up` waits for new instances to print their SSH host keys to the console (cloud-init does it at
first boot, a minute or two in); a host still silent then is left unpinned, and fab refuses it."""

HOST_KEY_POLL_SECONDS = 10
"""Between two reads of the consoles while waiting for host keys."""

AWS_RETRY_ATTEMPTS = 8
"""Tries of an AWS call that fails only until AWS catches up (a group still used by a terminated
instance's interface: DependencyViolation)."""

AWS_RETRY_SECONDS = 5.0
"""First wait between those tries; it doubles, up to AWS_RETRY_LONGEST."""

AWS_RETRY_LONGEST = 30.0
"""Longest wait between two tries (8 tries: about 2.5 minutes in all)."""

# Relative to the directory the operator runs the tools in, on purpose: a cluster's inventory and secrets
# belong to the operator's working folder (a checkout: its gitignored state/ and secrets/), never to the
# installed package, and two folders can hold two clusters. --inventory and --secrets-dir move them.
INVENTORY = "state/inventory.json"
"""Where provisioning writes the inventory that the Fabric tasks read (the pinned host keys go beside it)."""

SECRETS_DIR = "secrets"
"""Local directory (gitignored, mode 700) for the SSH key and generated passwords."""

REMOTE_DIR = "/opt/inferq"
"""Everything inferq puts on a host lives under this directory (plus systemd units)."""

WAIT_SECONDS = 600
"""How long a waiter or the Fabric readiness check waits before giving up."""

WORKER_UID = 10001
"""The worker image's unprivileged user (worker_image/Dockerfile, docker-compose.yml): it owns the workers'
secrets file on a host, mode 600, so its containers can read it and no other user can."""

IMAGE_NAME = "inferq-worker"
"""Repository name of the worker image; its tag names the release and build arguments it was built from."""

KEEP_IMAGES = 3
"""Worker images each host keeps (the running one among them): enough to roll back twice."""

KEEP_RELEASES = 3
"""Releases the orchestrator keeps under remote_dir/releases (the current one among them)."""

SMOKE_SECONDS = 120
"""How long a deploy's smoke job through the public API may take before the deploy counts it failed."""

PING_ROUND_SECONDS = 5
"""How long one Celery ping round waits before the deploy looks at the containers again."""
