"""``python -m termchat.devserver``: serve the demo reply by hand."""

import sys

from termchat.devserver.server import main

sys.exit(main())
