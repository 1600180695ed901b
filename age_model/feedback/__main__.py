"""``python -m age_model.feedback``: see cli.py."""

from .cli import main

raise SystemExit(main())
