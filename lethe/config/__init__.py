"""Typed configuration: YAML files and `--set key=value` overrides validated against pydantic schemas.

`base` holds the shared pieces, data, pre-training and unlearning schemas; `layers` the YAML/override
machinery; `unlearning` the unlearning evaluations and the attacks on them;
`attacks` the attack, poisoning, fine-tuning and leakage schemas. Everything is
re-exported here, so `from lethe.config import X` works for every schema.
"""

from lethe.config.attacks import (  # noqa: F401
    PII_KINDS,
    RELEASES,
    BackdoorConfig,
    BoundConfig,
    CalibrationConfig,
    DecodingConfig,
    DPConfig,
    ExposureConfig,
    ExtractConfig,
    ExtractionCalibrationConfig,
    ExtractionVictimConfig,
    FinetuneConfig,
    LeakageConfig,
    MiaConfig,
    NoiseConfig,
    PiiConfig,
    PoisonConfig,
)
from lethe.config.base import (  # noqa: F401
    DOMAINS,
    GENERAL,
    PRESETS,
    ArchConfig,
    BlindConfig,
    ChunkConfig,
    EarlyStopConfig,
    EvalPplConfig,
    GuardConfig,
    LoraConfig,
    MethodArgs,
    ModelLoading,
    PretrainConfig,
    Strict,
    TargetConfig,
    TrainConfig,
    UnlearnConfig,
    UnlearnEvalConfig,
    UnlearnSettings,
    default_data_dir,
    lethe_home,
)
from lethe.config.data import AssetsConfig, DataBuildConfig, DedupConfig, SplitSizes  # noqa: F401
from lethe.config.demo import DemoConfig  # noqa: F401
from lethe.config.layers import (  # noqa: F401
    Layer,
    command_defaults,
    config_changes,
    deep_merge,
    describe_validation_error,
    parse_overrides,
    read_yaml,
    resolve,
    to_yaml,
)
from lethe.config.screen import ScreenConfig  # noqa: F401
from lethe.config.unlearning import (  # noqa: F401
    EvalUnlearningConfig,
    RelearnConfig,
    RequestsConfig,
    SweepGrid,
    UMiaConfig,
    UnlearningAttacks,
    UnlearningStudyConfig,
    VerbmemConfig,
)
