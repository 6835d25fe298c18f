"""The fallback flag in the store: runs taken in, overrides, the served document, its file."""
