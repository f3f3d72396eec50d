"""``python -m duckmerge``: the command line (see :mod:`duckmerge.cli`)."""

from duckmerge.cli import main

raise SystemExit(main())
