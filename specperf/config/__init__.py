"""Suite configuration: the schema (frozen dataclasses), YAML loading with precise errors, and thresholds."""

from specperf.config.load import config_hash, load_config, narrow, parse_config
from specperf.config.schema import (
                                    DEFAULT_CONFIG_PATH,
                                    DEVICE_PATTERN,
                                    DTYPES,
                                    EMBEDDED_MODELS,
                                    EMBEDDED_PREFIX,
                                    MAX_BATCH_SIZE,
                                    MAX_K,
                                    SUITES_DIR,
                                    DatasetSpec,
                                    DraftSpec,
                                    Floors,
                                    GenerationSpec,
                                    SuiteConfig,
                                    Thresholds,
                                    TimingGate,
                                    TimingSpec,
                                    Tolerances,
)
from specperf.config.thresholds import apply_thresholds_file, load_thresholds, merge_thresholds, parse_thresholds
from specperf.config.yaml_io import read_yaml

__all__ = [
    "DEFAULT_CONFIG_PATH", "DEVICE_PATTERN", "DTYPES", "EMBEDDED_MODELS", "EMBEDDED_PREFIX", "MAX_BATCH_SIZE", "MAX_K",
    "SUITES_DIR", "DatasetSpec", "DraftSpec", "Floors", "GenerationSpec", "SuiteConfig", "Thresholds", "TimingGate",
    "TimingSpec", "Tolerances", "apply_thresholds_file", "config_hash", "load_config", "load_thresholds",
    "merge_thresholds", "narrow", "parse_config", "parse_thresholds", "read_yaml",
]
