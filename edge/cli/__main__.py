"""`python -m edge.cli` = `lineside`."""

from edge.cli import main

if __name__ == "__main__":
    main()
