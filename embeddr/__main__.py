"""``python -m embeddr``: the same CLI as the ``embeddr`` console script (for environments without it on PATH)."""

from .cli import main

if __name__ == "__main__":
    main()
