"""Model variants: fp32, fp16, INT8 dynamic / static (QDQ, QOperator), mixed precision, per-node speed."""

from edgeproof.variants.build import DEFAULT_CACHE_DIR, build_variant
from edgeproof.variants.fp16 import Fp16Refused
from edgeproof.variants.mixed import (
    MixedResult,
    MixedStep,
    NodeSensitivity,
    candidate_nodes,
    mixed_precision,
    rank_nodes,
)
from edgeproof.variants.prepare import Prepared, prepare_for_quantization
from edgeproof.variants.recipe import PRECISIONS, ExcludedNode, Recipe, Variant
from edgeproof.variants.speed import (
    NodeSpeed,
    SpeedComparison,
    compare_node_speed,
    keep_slow_nodes_float,
    speed_exclusions,
)

__all__ = [
    "DEFAULT_CACHE_DIR",
    "PRECISIONS",
    "ExcludedNode",
    "Fp16Refused",
    "MixedResult",
    "MixedStep",
    "NodeSensitivity",
    "NodeSpeed",
    "Prepared",
    "Recipe",
    "SpeedComparison",
    "Variant",
    "build_variant",
    "candidate_nodes",
    "compare_node_speed",
    "keep_slow_nodes_float",
    "mixed_precision",
    "prepare_for_quantization",
    "rank_nodes",
    "speed_exclusions",
]
