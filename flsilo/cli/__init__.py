"""The command line: the only place that imports typer or rich and maps errors to exit codes."""

import sys

from flsilo.cli import prehash

# Before any other import: `flsilo verify FILE` starts hashing FILE now, so the imports
# below and the key loading run while the one SHA-256 pass is already under way.
prehash.start_for(sys.argv)
