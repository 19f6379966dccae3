"""``python -m flsilo`` (and ``torchrun -m flsilo``) runs the command line."""

from flsilo.cli.app import main

if __name__ == "__main__":
    main()
