"""`python -m continual.cli`: the `continual` command."""
import sys

from continual.cli import main

sys.exit(main())
