"""Plain fine-tuning on each new arrival: the forgetting baseline."""
from continual.strategies.base import Strategy


class Naive(Strategy):
    name = "naive"
