"""``python -m imaged``: the same as the ``imaged`` command."""

from imaged.cli.main import main

if __name__ == "__main__":
    main()
