"""``python -m tools.checkpoints checkpoints|checkpoints-merge|demo ...``."""

from tools.checkpoints.cli import main

raise SystemExit(main())
