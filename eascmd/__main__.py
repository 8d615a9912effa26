"""`python -m eascmd`: the same entry point as the `eascmd` console script."""

from eascmd.cli import main

if __name__ == "__main__":
    main()
