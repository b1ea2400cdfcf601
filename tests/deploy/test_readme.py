"""The README's deploy commands are exactly the ones the deploy tests run."""
from __future__ import annotations

import re

from tests.deploy import commands
from tests.deploy.conftest import ROOT


def readme_deploy_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Deploy to AWS\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith(("inferq-provision ", "fab ")):
                found.append(line)
    return found


def test_readme_lists_the_tested_commands_in_order():
    assert readme_deploy_commands() == commands.ALL
