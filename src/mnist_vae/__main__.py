"""``python -m mnist_vae`` is the ``vae`` command."""

import sys

from mnist_vae.cli import main

sys.exit(main())
