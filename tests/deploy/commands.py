"""The deploy commands of docs/deploy.md, as the tests run them (tests/deploy/test_readme.py keeps them equal)."""

ADMIN_CIDR = "203.0.113.7/32"
UP = f"inferq-provision up --admin-cidr {ADMIN_CIDR}"
UP_DRY = UP + " --dry-run"
DOWN = "inferq-provision down"
DOWN_DRY = DOWN + " --dry-run"

DEPLOY = "fab -r deploy deploy"
STATUS = "fab -r deploy status"
SUBMIT = 'fab -r deploy submit --text "the hosts are talking"'
LOGS = "fab -r deploy logs --lines 5"
UPDATE = "fab -r deploy update"

FAB_PATHS = " --inventory {inventory} --secrets {secrets}"
"""What the tests append to the fab commands: their own inventory and secrets directory."""

ALL = [UP_DRY, UP, DEPLOY, STATUS, SUBMIT, LOGS, UPDATE, DOWN_DRY, DOWN]
