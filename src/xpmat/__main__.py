"""``python -m xpmat``: see :mod:`xpmat.cli`."""

from xpmat.cli import main

raise SystemExit(main())
