"""inferq's benchmark: the raw model, the seed's design rebuilt, and inferq end to end (``inferq-bench``)."""
