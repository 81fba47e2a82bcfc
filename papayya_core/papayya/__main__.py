"""``python -m papayya``: the same command line as ``papayya``."""

from __future__ import annotations

from papayya.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
