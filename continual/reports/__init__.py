"""What a user reads about the rounds: the accuracy matrix and curves (plots.py, report.py, as DVC metrics and
plots) and a drift score of a file against a round's reference (drift.py).

May import continual.params, continual.progress and continual.workspace, and service/; nothing that trains.
"""
