"""Every setting of params.yaml: its type, its default and its bounds (the template's comments document them).

The server's sections (``serving``, ``monitoring``) are service.config's dataclasses: the server reads the same
defaults without importing continual. A default here is the shipped one; continual/template/params.yaml
writes the same values out for the user (tests/test_params.py holds the two equal).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from continual.params.typed import read, to_dict
from service.config import MonitoringSettings, ServingSettings, bounded

StrategyName = Literal["naive", "replay", "ewc", "replay+ewc", "joint", "ncm", "ridge", "adapt", "olora"]


@dataclass(frozen=True)
class LoraParams:
    rank: int = bounded(8, at_least=1)
    alpha: float = bounded(16, above=0)
    dropout: float = bounded(0.05, at_least=0, below=1)
    target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    lr: float = bounded(1.0e-3, above=0)
    gradient_checkpointing: bool = True


@dataclass(frozen=True)
class ModelParams:
    base: str = "minilm"
    max_length: int = bounded(128, at_least=2)
    adapter: Literal["none", "lora"] = "none"
    lora: LoraParams = field(default_factory=LoraParams)


@dataclass(frozen=True)
class IngestParams:
    test_fraction: float = bounded(0.2, above=0, below=1)
    min_per_label: int = bounded(2, at_least=1)
    duplicates: Literal["drop", "keep"] = "drop"
    max_text_bytes: int = bounded(1_000_000, at_least=1)
    relabels: Literal["keep", "drop"] = "keep"
    max_label_chars: int = bounded(100, at_least=1)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = bounded(4, at_least=1)
    batch_size: int = bounded(32, at_least=1)
    eval_batch_size: int = bounded(128, at_least=1)
    lr: float = bounded(1.0e-4, at_least=0)
    head_lr: float = bounded(1.0e-2, at_least=0)
    prototype_scale: float = bounded(10.0, above=0)
    head_refit: Literal["never", "on_growth", "always"] = "on_growth"
    head_refit_with: Literal["prototypes", "ridge", "sums"] = "sums"
    warmup_ratio: float = bounded(0.1, at_least=0, at_most=1)
    weight_decay: float = bounded(0.01, at_least=0)
    threads: int = bounded(0, at_least=0)
    processes: int = bounded(1, at_least=1)


@dataclass(frozen=True)
class ReplayParams:
    mem_size: int = bounded(500, at_least=0)
    policy: Literal["class_balanced", "reservoir"] = "class_balanced"
    batch_size_mem: int | None = bounded(32, at_least=0)  # 0 or null: as many as the batch of new data


@dataclass(frozen=True)
class EWCParams:
    lambda_: float = field(default=1.0e5, metadata={"key": "lambda", "at_least": 0})
    decay: float = bounded(0.9, at_least=0, at_most=1)


@dataclass(frozen=True)
class OLoRAParams:
    lambda_orth: float = bounded(0.5, at_least=0)
    lambda_l2: float = bounded(0.0, at_least=0)


@dataclass(frozen=True)
class AdaptParams:
    rounds: int = bounded(1, at_least=0)
    arrivals: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NCMParams:
    logit_scale: float = bounded(16.0, above=0)


@dataclass(frozen=True)
class RidgeParams:
    lambda_: Literal["auto"] | float = field(default="auto", metadata={"key": "lambda", "above": 0})
    projection_dim: int = bounded(0, at_least=0)
    logit_scale: float = bounded(4.0, above=0)


@dataclass(frozen=True)
class StrategyParams:
    name: StrategyName = "adapt"
    replay: ReplayParams = field(default_factory=ReplayParams)
    ewc: EWCParams = field(default_factory=EWCParams)
    olora: OLoRAParams = field(default_factory=OLoRAParams)
    adapt: AdaptParams = field(default_factory=AdaptParams)
    ncm: NCMParams = field(default_factory=NCMParams)
    ridge: RidgeParams = field(default_factory=RidgeParams)


@dataclass(frozen=True)
class ExportParams:
    onnx: bool = True
    int8_per_channel: bool = True
    reference_rows: int = bounded(1000, at_least=0)


@dataclass(frozen=True)
class ProgressParams:
    interval_s: float = bounded(2, above=0)


@dataclass(frozen=True)
class DemoParams:
    per_domain: int = bounded(500, at_least=1)
    domains: list[str] = field(default_factory=lambda: ["tweets", "movies", "amazon", "nyt"])


@dataclass(frozen=True)
class TrackingParams:
    uri: str | None = ""                   # empty or null: $MLFLOW_TRACKING_URI, else the workspace's mlflow.db
    experiment: str = "continual"
    registered_model: str | None = ""      # empty or null: continual-<workspace id>
    confusion_classes: int = bounded(20, at_least=1)
    register_models: bool = True           # false: rounds are logged, never registered (`continual compare`)


@dataclass(frozen=True)
class PromotionParams:
    max_avg_acc_drop: float = 0.02
    max_forgetting: float = 0.10
    min_new_acc: float = 0.40


@dataclass(frozen=True)
class Params:
    """params.yaml, typed. ``Params.from_dict`` checks a parsed file; ``to_dict`` gives the plain dict back."""
    seed: int = 42
    model: ModelParams = field(default_factory=ModelParams)
    ingest: IngestParams = field(default_factory=IngestParams)
    train: TrainParams = field(default_factory=TrainParams)
    strategy: StrategyParams = field(default_factory=StrategyParams)
    export: ExportParams = field(default_factory=ExportParams)
    serving: ServingSettings = field(default_factory=ServingSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    progress: ProgressParams = field(default_factory=ProgressParams)
    demo: DemoParams = field(default_factory=DemoParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)
    promotion: PromotionParams = field(default_factory=PromotionParams)

    @classmethod
    def from_dict(cls, data: Any, file: str = "params.yaml") -> Params:
        """``data`` (params.yaml as parsed) checked and typed over the defaults; ParamsError names what does
        not fit, with the nearest known key for an unknown one."""
        return read(cls, data, file)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
