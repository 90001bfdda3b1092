"""``python -m remit_service`` is the ``remit`` CLI."""

from .cli import main

raise SystemExit(main())
