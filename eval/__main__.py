"""`python -m npueval.eval` is the `npueval` command."""

import sys

from .cli import main

sys.exit(main())
