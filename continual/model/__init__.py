"""The classifier and what trains it, with no notion of a round or a strategy: the pretrained base
(``pretrained``), the classifier and its folder (``encoder``, ``adapters`` for LoRA), the training rows
(``data``), Avalanche's template (``trainer``), the closed-form ridge math (``ridge``) and head refit (``head``),
evaluation, the ONNX head swap (``onnx_head``) and the torch.distributed helpers (``distributed``).

May import: the root utilities (``continual.params``, ``continual.progress``), ``continual.workspace``,
``continual.arrivals``, ``continual.reports`` and ``service``; never ``continual.strategies`` or above.
"""
