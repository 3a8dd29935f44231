"""Developers' tools, run from the checkout: ``python tools/NAME.py``.

A package, so that the tests can use them too (``tests/pgbouncer.py`` finds the Debian roots
with ``debian_root``).
"""
