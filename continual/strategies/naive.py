"""Plain fine-tuning on each new arrival: the forgetting baseline."""
from continual.strategies.finetune import FineTuning


class Naive(FineTuning):
    name = "naive"
