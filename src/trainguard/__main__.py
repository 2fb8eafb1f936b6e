"""``python -m trainguard`` runs the command line."""

from trainguard.cli.main import main

raise SystemExit(main())
