"""``python -m hostsec`` is the ``hostsec`` command."""

import sys

from hostsec.cli import main

sys.exit(main())
