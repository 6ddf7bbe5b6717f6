"""``python -m motus_model.aloha_demos``: record scripted demonstrations (see ``record.main``)."""

from motus_model.aloha_demos.record import main

raise SystemExit(main())
