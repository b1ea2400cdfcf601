"""The deploy page's commands (docs/deploy.md) are exactly the ones the deploy tests run."""
from __future__ import annotations

import re

from tests.deploy import commands
from tests.deploy.conftest import ROOT

DEPLOY_PAGE = ROOT / "docs" / "deploy.md"


def documented_deploy_commands() -> list[str]:
    """The inferq-provision and fab lines of the deploy page's first section, in order."""
    text = DEPLOY_PAGE.read_text()
    section = text.split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith(("inferq-provision ", "fab ")):
                found.append(line)
    return found


def test_the_deploy_page_lists_the_tested_commands_in_order():
    assert documented_deploy_commands() == commands.ALL
