"""The operator's image prune counts images, not tags (a docker stand-in that prints what podman prints)."""
from __future__ import annotations

import json
import stat

from inferq.deploy.image import prune_local

FAKE_DOCKER = """#!/usr/bin/env python3
import json, sys
state = json.load(open({state!r}))
args = sys.argv[1:]
if args[0] == "images":
    for tag, image_id, created in state["images"]:
        print(f"{{tag}} {{image_id}} {{created}}")
elif args[:2] == ["image", "inspect"]:
    found = [i for t, i, _ in state["images"] if t.split("/")[-1] == args[-1].split("/")[-1]]
    print(found[0] if found else "")
    sys.exit(0 if found else 1)
elif args[0] == "rmi":
    with open({log!r}, "a") as log:
        log.write(args[1] + "\\n")
"""


def fake_docker(tmp_path, images):
    state, log = tmp_path / "state.json", tmp_path / "rmi.log"
    state.write_text(json.dumps({"images": images}))
    log.write_text("")
    script = tmp_path / "docker"
    script.write_text(FAKE_DOCKER.format(state=str(state), log=str(log)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), log


def test_a_release_sharing_its_image_with_an_older_tag_keeps_both_tags(tmp_path):
    # Two releases whose files built the same image (one id, one creation time), an older image, and
    # the image being rolled out (not a release tag). Keep 2: the rollout's and the newest other image.
    docker, log = fake_docker(tmp_path, [
        ["localhost/inferq-worker:lab-next", "aaaaaaaaaaaa", "2026-11-28 21:00:00 +0000 UTC"],
        ["localhost/inferq-worker:a3aa50b644f7", "adb4a0f10d5c", "2026-11-28 20:42:27 +0000 UTC"],
        ["localhost/inferq-worker:bcc9f03e1deb", "adb4a0f10d5c", "2026-11-28 20:42:27 +0000 UTC"],
        ["localhost/inferq-worker:0123456789ab", "cccccccccccc", "2026-11-28 19:00:00 +0000 UTC"],
    ])
    removed = prune_local(docker, keep=2, current="localhost/inferq-worker:lab-next")
    assert removed == ["localhost/inferq-worker:0123456789ab"]
    assert log.read_text().split() == removed


def test_the_current_release_is_never_pruned_and_counts_as_kept(tmp_path):
    docker, log = fake_docker(tmp_path, [
        ["localhost/inferq-worker:0000000000a2", "a2a2a2a2a2a2", "2026-11-28 21:06:05 +0000 UTC"],
        ["localhost/inferq-worker:0000000000a1", "a1a1a1a1a1a1", "2026-11-28 21:06:04 +0000 UTC"],
        ["localhost/inferq-worker:a3aa50b644f7", "adb4a0f10d5c", "2026-11-28 20:42:27 +0000 UTC"],
    ])
    removed = prune_local(docker, keep=2, current="inferq-worker:a3aa50b644f7")
    assert removed == ["localhost/inferq-worker:0000000000a1"]
    assert log.read_text().split() == removed
