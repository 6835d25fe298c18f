"""The store: SQLAlchemy tables, migrations, log writing, log sources and runs.

Every function takes an injected ``Engine``; nothing here holds a global one.
"""

__all__: list[str] = []
