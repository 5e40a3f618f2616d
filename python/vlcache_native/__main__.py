"""``python -m vlcache_native``: the ``vlcache-native`` command (cli.py)."""

import sys

from .cli import main

sys.exit(main())
