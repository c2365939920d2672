"""The data service: the store behind HTTP, with authenticated callers (``matdx serve``)."""
