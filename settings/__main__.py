"""``python -m inferq.settings``: print docs/settings.md."""
from inferq.settings import markdown

print(markdown())
