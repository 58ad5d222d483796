"""Sequence-dependent T2 contrast: each site's echo and repetition times reweight the tissue signals.

The tissue signals of :class:`.anatomy.T2Levels` are calibrated on the real case (a 3T endorectal-coil
turbo-spin-echo scan, docs/realism.md), so they are the contrast of one reference sequence. A site with
effective echo time ``TE`` and repetition time ``TR`` at field ``B0`` sees tissue ``t`` at

    level_t * exp(-(TE - TE_ref) / T2_t) * (1 - exp(-TR / T1_t(B0))) / (1 - exp(-TR_ref / T1_t(3T)))

the spin-echo signal ``PD (1 - exp(-TR/T1)) exp(-TE/T2)`` divided by the same at the reference
(``TE_ref`` = 100 ms, ``TR_ref`` = 4000 ms, 3T). So the reference sequence reproduces the calibrated
levels exactly, a longer echo darkens short-T2 tissue (muscle, T2 29 ms) much more than the gland, and a
shorter repetition darkens long-T1 fluid (urine).

Relaxation times: prostate (T1 1597 ms, T2 74 ms), paravertebral muscle (898, 29), subcutaneous fat's T1
(382) and vertebral marrow (586, 49) are the 3T values of de Bazelaire et al., Radiology 2004;
230:652-659, who also found T1 about 21% longer at 3T than at 1.5T (``T1(1.5T) = T1(3T) / 1.21`` here;
T2 is kept across fields). Fat's T2 depends on the sequence (41-143 ms at 3T across sequences, longest on
fast spin echo with long echo trains: Pai et al., Magn Reson Imaging 2008; 26:1215-1220); a T2 turbo spin
echo sees the long value, 133 ms, the one calibration.py already cites for fat. The prostate value is used for the central gland; the rest are the
simulator's assumptions, marked ``assumed`` in :data:`RELAXATION_MS`: a longer T2 for the peripheral
zone than for the central gland (it is brighter on T2), free-fluid values for urine, seminal fluid and
the balloon's gel, blood-like values for veins, the corpus spongiosum, mucosa and urethra. Cortical bone
carries no modelled MR signal and keeps its level.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Dict, Tuple

import numpy as np

from .anatomy import T2Levels

__all__ = ["RELAXATION_MS", "REFERENCE_SEQUENCE", "T1_RATIO_3T_TO_1P5T", "sequence_weight", "weight_levels"]

REFERENCE_SEQUENCE = {"echo_time_ms": 100.0, "repetition_time_ms": 4000.0, "field_strength_t": 3.0}
"""The sequence the calibrated :class:`.anatomy.T2Levels` stand for (the real case's kind of scan)."""

T1_RATIO_3T_TO_1P5T = 1.21
"""``T1(3T) / T1(1.5T)``, the mean ratio of de Bazelaire et al. 2004."""

_PROSTATE = (1597.0, 74.0)
_MUSCLE = (898.0, 29.0)
_FAT = (382.0, 133.0)  # T2: fast-spin-echo value (module docstring)
_MARROW = (586.0, 49.0)
_FLUID = (3000.0, 1000.0)  # assumed: free water (urine, seminal fluid, gel)
_BLOOD = (1600.0, 150.0)  # assumed: venous blood and blood-rich tissue

RELAXATION_MS: Dict[str, Tuple[float, float] | None] = {
    "fat": _FAT,
    "muscle": _MUSCLE,
    "cortex": None,
    "marrow": _MARROW,
    "urine": _FLUID,
    "bladder_wall": _MUSCLE,
    "sv_fluid": _FLUID,
    "rectal_wall": _MUSCLE,
    "mucosa": _BLOOD,
    "stool": (1000.0, 50.0),  # assumed
    "gel": _FLUID,
    "peripheral_zone": (1597.0, 110.0),  # assumed: prostate T1, longer T2 than the central gland
    "central_gland": _PROSTATE,
    "nodule_contrast": _PROSTATE,
    "stroma": _MUSCLE,
    "capsule": _MUSCLE,
    "urethra": _BLOOD,
    "lesion": (1597.0, 60.0),  # assumed: shorter T2 than the central gland (dark on T2)
    "vein": _BLOOD,
    "spongiosum": _BLOOD,
}
"""``(T1, T2)`` at 3T in ms per :class:`.anatomy.T2Levels` field; ``None``: no modelled signal (kept)."""


def sequence_weight(t1_ms: float, t2_ms: float, echo_time_ms: float, repetition_time_ms: float,
                    field_strength_t: float) -> float:
    """Signal of one tissue under ``(TE, TR, B0)`` relative to the reference sequence (module docstring).

    Args:
        t1_ms, t2_ms: the tissue's relaxation times at 3T.
        echo_time_ms, repetition_time_ms: the site's effective TE and TR.
        field_strength_t: 1.5 or 3 (T1 is divided by :data:`T1_RATIO_3T_TO_1P5T` below 3T).
    """
    if min(t1_ms, t2_ms, echo_time_ms, repetition_time_ms, field_strength_t) <= 0:
        raise ValueError(f"relaxation and sequence times and the field must be > 0, got T1={t1_ms}, T2={t2_ms}, "
                         f"TE={echo_time_ms}, TR={repetition_time_ms}, B0={field_strength_t}.")
    t1_field = t1_ms if field_strength_t >= 3.0 else t1_ms / T1_RATIO_3T_TO_1P5T
    reference = REFERENCE_SEQUENCE
    t2_decay = np.exp(-(echo_time_ms - reference["echo_time_ms"]) / t2_ms)
    recovery = -np.expm1(-repetition_time_ms / t1_field) / -np.expm1(-reference["repetition_time_ms"] / t1_ms)
    return float(t2_decay * recovery)


def weight_levels(levels: T2Levels, echo_time_ms: float, repetition_time_ms: float,
                  field_strength_t: float) -> T2Levels:
    """``levels`` as the sequence ``(TE, TR, B0)`` sees them: each field times its :func:`sequence_weight`."""
    changes = {}
    for item in fields(levels):
        relaxation = RELAXATION_MS[item.name]
        if relaxation is not None:
            weight = sequence_weight(*relaxation, echo_time_ms, repetition_time_ms, field_strength_t)
            changes[item.name] = getattr(levels, item.name) * weight
    return replace(levels, **changes)
