"""inferq's command-line client (``inferq``): HTTP only, no Flask, no torch."""
