"""``python -m papayya_celery worker [celery worker options]``: a generic worker that runs any papayya
agent from its run's record, without declaring it as a task. The same as
``celery -A papayya_celery.generic worker -P threads -c 8``; options given override those defaults.
"""

from __future__ import annotations

import sys

USAGE = "usage: python -m papayya_celery worker [celery worker options, e.g. -c 16 -l INFO]"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "worker":
        print(USAGE, file=sys.stderr)
        return 2
    from papayya_celery import require_celery

    require_celery()
    from papayya_celery.generic import app

    defaults = []
    if not any(a in ("-P", "--pool") or a.startswith("--pool=") for a in args):
        defaults += ["-P", "threads"]
    if not any(a in ("-c", "--concurrency") or a.startswith("--concurrency=") for a in args):
        defaults += ["-c", "8"]
    app.worker_main(["worker", *defaults, *args[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
