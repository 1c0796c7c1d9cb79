"""``python -m dropoutx``: the command-line entry point (see ``dropoutx._cli``)."""

from dropoutx._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
