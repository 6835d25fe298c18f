"""The ``mqm`` command: parsing, terminal rendering, the demo."""
