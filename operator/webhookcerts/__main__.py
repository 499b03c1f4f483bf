"""``python -m webhookcerts`` runs the same command line as the ``webhookcerts`` script."""

import sys

from webhookcerts.cli import main

sys.exit(main.main())
