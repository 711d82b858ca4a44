"""Arrivals: how a labelled file enters the stream (layer 2, above continual.workspace).

Owns every step from a file to a registered, DVC-tracked arrival, and the reading back of one:
- ``parse``: a CSV or JSON Lines file into checked rows; each refusal names the file and the line;
- ``split``: de-duplication against earlier arrivals, relabels, the train/test split, ``read_split``;
- ``journal``: one ingest at a time, the undo and its journal that roll back (or finish) a killed ingest;
- ``ingest``: `continual ingest`, the orchestration of the above;
- ``verify``: `continual verify`, data/arrivals/ against stream.yaml;
- ``jsonl``: the JSON Lines reader and writer of the whole project;
- ``capture``: `continual capture export`, a server's captured texts as a CSV to label and ingest.

May import continual.params, continual.progress, continual.workspace, its own modules and service/ (the
capture file reader); never a higher package (reports, model, strategies, rounds, registry, cli).
"""
