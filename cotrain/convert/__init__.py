"""Conversion framework: converter specs, the robot sample builder and the sharding pipeline.

Converters themselves live in the `cotrain_converters` package (source folder `cotrain_converters/`) and
register through the `cotrain.converters` entry point; this package never imports them by name.
"""

from cotrain.convert.spec import (
    CONVERTERS,
    Converter,
    ConvertOptions,
    DatasetInfo,
    RobotOptions,
    RunOptions,
    Unit,
    UnitSink,
    VisionLanguageOptions,
)

__all__ = [
    "CONVERTERS",
    "ConvertOptions",
    "Converter",
    "DatasetInfo",
    "RobotOptions",
    "RunOptions",
    "Unit",
    "UnitSink",
    "VisionLanguageOptions",
]
