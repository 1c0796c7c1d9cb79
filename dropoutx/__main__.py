"""``python -m dropoutx``: see ``dropoutx._cli``."""

from dropoutx._cli import main

raise SystemExit(main())
