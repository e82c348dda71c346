"""``python -m banditroute.cli``: the command line (:mod:`.main`)."""

from banditroute.cli.main import main

raise SystemExit(main())
