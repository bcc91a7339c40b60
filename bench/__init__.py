"""Throughput benchmarks (not tests): ``make bench`` runs ``python -m bench``.

Each public module here (``bench/<name>.py``, no leading underscore) defines
``main(argv: list[str] | None = None) -> int`` and can run alone (``python -m bench.<name>``);
``python -m bench [ARGS]`` runs them all in turn, passing ``ARGS`` (e.g. ``--quick``) to each.
Private helpers are ``_name.py``.
"""
