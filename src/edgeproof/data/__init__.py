"""Datasets, slices (nominal / stress / tail), corruption transforms and content IDs."""

from edgeproof.data.dataset import (
    CALIBRATION,
    EVALUATION,
    Dataset,
    Part,
    check_disjoint,
    check_fits_model,
    load_dataset,
    make_dataset,
    make_part,
)
from edgeproof.data.feeds import Inputs
from edgeproof.data.ids import content_id
from edgeproof.data.slices import (
    SLICE_KINDS,
    CalibrationSet,
    Slice,
    SliceKind,
    SliceSpec,
    TransformSpec,
    calibration_set,
    check_slice_specs,
    make_slice,
    make_slices,
)
from edgeproof.data.transforms import SEVERITY_RANGE, TRANSFORMS, apply_transform

__all__ = [
    "CALIBRATION",
    "EVALUATION",
    "SEVERITY_RANGE",
    "SLICE_KINDS",
    "TRANSFORMS",
    "CalibrationSet",
    "Dataset",
    "Inputs",
    "Part",
    "Slice",
    "SliceKind",
    "SliceSpec",
    "TransformSpec",
    "apply_transform",
    "calibration_set",
    "check_disjoint",
    "check_fits_model",
    "check_slice_specs",
    "content_id",
    "load_dataset",
    "make_dataset",
    "make_part",
    "make_slice",
    "make_slices",
]
