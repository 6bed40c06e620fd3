"""Lets `python -m imagedepot.cli …` run the same command as the `imagedepot` console script
(the tests start the CLI this way, with the interpreter under test)."""

from imagedepot.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
