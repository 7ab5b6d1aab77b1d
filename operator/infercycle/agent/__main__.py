"""``python -m infercycle.agent``: the same as ``infercycle agent``."""

from infercycle.agent.server import main

raise SystemExit(main())
