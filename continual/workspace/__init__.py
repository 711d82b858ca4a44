"""The workspace: a git + DVC folder that holds one stream (layer 1, above continual.params and continual.progress).

Owns the on-disk layout and nothing that reads what the files mean:
- ``layout``: where every file lives (``Workspace``), the stream of registered arrival keys;
- ``create``: `continual init`, a new workspace from continual/template/;
- ``hashes``: content hashes as DVC computes them, and what the DVC cache holds;
- ``files``: atomic writes, the one writer every package uses;
- ``repair``: what a killed process leaves behind, and `continual repair`;
- ``finished_round``: the last round finished, kept so that a kill cannot cost a retraining;
- ``storage``: what the stream costs on disk.

May import continual.params, continual.progress and its own modules; never a higher package (arrivals,
reports, model, strategies, rounds, registry, cli) nor service/.
"""
