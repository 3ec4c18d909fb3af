"""``python -m gateway.model_check [--threads N] [--budget BYTES]``: one trial load by hand."""

from gateway.model_check.trial_child import main

raise SystemExit(main())
