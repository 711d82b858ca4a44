"""A round, start to end: ``round.run_round`` loads the previous model, lets the strategy train, evaluates,
exports (``export``, ``reference``) and writes the round folder; what its time went on (``costs``), the
forgetting metrics (``metrics``), the multi-process launcher (``launch`` in the caller, ``rank`` in each
process), and ``safe_round``, the entry point that puts back a finished round a kill left unrecorded.

May import: ``continual.strategies``, ``continual.model`` and every layer below them, and ``service``; never
``continual.registry`` or ``continual.cli``.
"""
