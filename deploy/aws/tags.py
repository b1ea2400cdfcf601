"""The cluster's tags, as EC2 wants them in TagSpecifications and Filters."""
from __future__ import annotations

from inferq.deploy.defaults import NAME_TAG_KEY, ROLE_TAG_KEY, TAG_KEY


def tags(cluster: str, role: str, name: str) -> list[dict]:
    """Tags for a new resource: cluster, role, instance name, and the Name the console shows."""
    return [
        {"Key": TAG_KEY, "Value": cluster},
        {"Key": ROLE_TAG_KEY, "Value": role},
        {"Key": NAME_TAG_KEY, "Value": name},
        {"Key": "Name", "Value": f"{cluster}-{name}"},
    ]


def tag_spec(resource_type: str, cluster: str, role: str, name: str) -> list[dict]:
    """A TagSpecifications list tagging the resource at creation (never untagged, even briefly)."""
    return [{"ResourceType": resource_type, "Tags": tags(cluster, role, name)}]


def cluster_filter(cluster: str, **extra: str) -> list[dict]:
    """Filters matching the cluster's resources, narrowed by tag=value pairs (role=..., name=...)."""
    keys = {"role": ROLE_TAG_KEY, "name": NAME_TAG_KEY}
    filters = [{"Name": f"tag:{TAG_KEY}", "Values": [cluster]}]
    filters += [{"Name": f"tag:{keys[k]}", "Values": [v]} for k, v in extra.items()]
    return filters


def tag_value(resource: dict, key: str) -> str | None:
    """The value of one tag of a described resource."""
    return next((t["Value"] for t in resource.get("Tags", []) if t["Key"] == key), None)
