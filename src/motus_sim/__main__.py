"""``python -m motus_sim``: record scripted demonstrations (see ``record.main``)."""

from motus_sim.record import main

raise SystemExit(main())
