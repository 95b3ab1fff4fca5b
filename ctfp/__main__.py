"""``python -m ctfp``: the same as the ``ctfp`` command."""

from ctfp.cli import main

raise SystemExit(main())
