"""A parametric male pelvis seen by axial T2: sampling the anatomy and rendering its T2 signal.

Coordinates are patient millimetres in LPS (``x`` to the patient's left, ``y`` posterior, ``z``
superior) with the origin at the centre of the prostate. Every structure is a soft shape (signed
distance -> partial-volume fraction, :mod:`.fields`); the signal is painted from the outside in:

air -> body (subcutaneous fat, gluteal cleft) -> muscle mass with fat planes -> pelvic cavity fat
with vessels -> ischioanal fossae (fat with septa) -> bones (cortex + marrow: pubis and ischium as a ring outside the obturator internus,
femoral heads and necks, sacrum) -> levator ani -> bladder -> seminal vesicles -> rectum (or the
endorectal coil's balloon) -> periprostatic veins -> prostate (peripheral zone, central gland with
nodules, anterior stroma, darker towards its apex and base, capsule, urethra, optional focal lesion).

A smooth random displacement (2-5 mm, 25 mm correlation) warps all of it, a second one (3-6 mm,
12 mm) the muscles and bones only; a third smooth field perturbs the prostate outline; Gaussian
random fields at 1, 3 and 10 mm give the textures, fat planes and vessels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .fields import (
    Coords,
    blend,
    ellipsoid_distance,
    fraction_inside,
    segment_distance,
    slab_distance,
    smooth_field,
)

__all__ = ["T2Levels", "PelvisAnatomy", "PelvisRender", "GlandEnds", "sample_t2_levels", "sample_pelvis",
           "sample_gland_ends", "render_pelvis"]


RECTOPROSTATIC_FASCIA_MM = 1.5
"""Thickness of the fibromuscular layer painted in front of the rectal wall: the rectoprostatic (Denonvilliers')
fascia and the rectal muscularis, T2 like muscle, with little or no fat between the prostate and the rectum in the
midline (anatomy). Without it the 0.5-2.5 mm gap was fat, which an endorectal coil's near field made the
brightest band of the image, behind the gland; in the real case the brightest band is the peripheral zone (wall
profile, docs/realism.md, round 5; chosen with the coil gain x 1.3 and the peripheral zone x 0.9 in round 5c)."""

COIL_ANTERIOR_FRACTION = 0.3
"""Position of the endorectal coil's loop inside the balloon: ``rectum_y - f * balloon half depth``. The
loop lies against the balloon's anterior face, towards the prostate (device design of inflatable
endorectal coils, e.g. Medrad eCoil). 0.3, with a 20-32 mm fall-off (:mod:`.sites`), gives the intensity
profile from the rectal wall through the gland of the real case (docs/realism.md, round 2, "wall profile"); the
earlier 0.6 with a 9-13 mm fall-off put a 6-8 std spike at the rectal wall where the real case has 2.5."""


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


@dataclass(frozen=True)
class T2Levels:
    """T2-weighted signal of each tissue, in units where urine is about 1.1 and fat about 0.8."""

    fat: float
    muscle: float
    cortex: float
    marrow: float
    urine: float
    bladder_wall: float
    sv_fluid: float
    rectal_wall: float
    mucosa: float
    stool: float
    gel: float
    peripheral_zone: float
    central_gland: float
    nodule_contrast: float
    stroma: float
    capsule: float
    urethra: float
    lesion: float
    vein: float
    spongiosum: float


def sample_t2_levels(rng: np.random.Generator, fat_level: Tuple[float, float]) -> T2Levels:
    """Per-case tissue signals; ``fat_level`` is the site's range for fat (sequence dependent)."""
    return T2Levels(
        fat=_u(rng, *fat_level),
        muscle=_u(rng, 0.2, 0.3),
        cortex=_u(rng, 0.02, 0.05),
        marrow=_u(rng, 0.4, 0.6),
        urine=_u(rng, 0.45, 1.25),
        bladder_wall=_u(rng, 0.15, 0.25),
        sv_fluid=_u(rng, 0.6, 1.2),
        rectal_wall=_u(rng, 0.18, 0.28),
        mucosa=_u(rng, 0.4, 0.6),
        stool=_u(rng, 0.25, 0.5),
        gel=_u(rng, 0.8, 1.0),
        peripheral_zone=_u(rng, 0.54, 0.81),
        central_gland=_u(rng, 0.42, 0.7),
        nodule_contrast=_u(rng, 0.1, 0.25),
        stroma=_u(rng, 0.12, 0.2),
        capsule=_u(rng, 0.1, 0.18),
        urethra=_u(rng, 0.45, 0.7),
        lesion=_u(rng, 0.22, 0.34),
        vein=_u(rng, 0.85, 1.1),
        spongiosum=_u(rng, 0.6, 0.9),
    )


@dataclass(frozen=True)
class GlandEnds:
    """The gland darker towards its apex and base (round 8, docs/realism.md).

    The gland's signal (both zones, before the capsule line and the urethra are painted) is multiplied by
    ``1 - darkening * clip(1 - e / length_mm, 0, 1)``, ``e`` the distance (mm) along the gland's long axis from its
    nearer end: ``1 - darkening`` at the apex and the base, 1 from ``length_mm`` inwards. At the base the gland is
    mostly central zone (T2-dark) and the bladder neck's smooth muscle, at the apex the sphincter's striated fibres
    run into it; the real case's first and last three gland slices are about 1 std darker than its interior, even
    4-6 mm inside the outline. The default darkens nothing."""

    darkening: float = 0.0
    length_mm: float = 8.0

    def __post_init__(self):
        if not 0.0 <= self.darkening <= 1.0 or not self.length_mm > 0.0:
            raise ValueError(f"GlandEnds: darkening must lie in [0, 1] and length_mm be positive, got "
                             f"darkening={self.darkening}, length_mm={self.length_mm}.")

    def factor(self, axial_mm: np.ndarray) -> np.ndarray:
        """The multiplier at distances ``axial_mm`` (mm) from the nearer end, float32, the shape of ``axial_mm``."""
        ramp = np.clip(1.0 - np.asarray(axial_mm, dtype=np.float32) * np.float32(1.0 / self.length_mm), 0.0, 1.0)
        return (1.0 - np.float32(self.darkening) * ramp).astype(np.float32, copy=False)


def sample_gland_ends(rng: np.random.Generator) -> GlandEnds:
    """Per-case darkening of the gland's ends: ``darkening`` ~ U(0.3, 0.6), then ``length_mm`` ~ U(6, 10)
    (round 8, docs/realism.md; set from the real case's edge bands, about 1 std darker on its end slices)."""
    return GlandEnds(darkening=_u(rng, 0.3, 0.6), length_mm=_u(rng, 6.0, 10.0))


@dataclass(frozen=True)
class PelvisAnatomy:
    """Sampled shape parameters of one patient (millimetres, degrees, patient LPS, prostate at 0).

    Prostate: semi-axes ``lateral``, ``anterior``/``posterior`` (half depths) and ``height`` (half
    length), long axis tilted by ``tilt_deg`` (base posterior), tapering ``apex_taper``/``base_taper``,
    ``anterior_narrowing`` of the lateral width, outline noise ``outline_noise``; central gland: an
    ellipsoid in normalised prostate coordinates ``cg_center`` (v, w) and ``cg_semi`` (u, v, w).
    Levator ani: ``levator_gap`` from the gland's anterolateral and lateral surface, ``levator_thickness``
    thick, continued as a sling behind the rectum. Ischioanal fossae: ellipses ``fossa_center`` (right side,
    mirrored) with semi-axes ``fossa_semi`` between ``fossa_z`` (the roof rises 0.4 mm per mm laterally).
    Below the apex: the external urethral sphincter, a muscle cylinder of radius ``sphincter_radius`` around the
    membranous urethra, ``sphincter_length`` long; the perineal muscles (deep transverse perineal muscle,
    puboperineal part of the levator ani and perineal body; muscle with the fraction ``perineal_fat`` of fat mixed
    in) filling the space between the rectum's anterior wall and the pubic arch, ``perineal_half_width`` wide,
    down to ``perineal_depth`` below the apex; the bulb of the penis, an ellipsoid at ``bulb_center`` (prostate
    frame ``yp``, ``zp``) of semi-axes ``bulb_semi``.
    In front of the gland: the detrusor apron, a fibromuscular sheet ``apron_thickness`` thick.
    Body: an ellipse of semi-axes ``body_semi``, about 340-405 x 220-285 mm overall (adult pelvis), so every
    site's field of view cuts it laterally. Sources of the numbers: :mod:`.calibration`.
    """

    # prostate
    lateral: float
    anterior: float
    posterior: float
    height: float
    tilt_deg: float
    apex_taper: float
    base_taper: float
    anterior_narrowing: float
    outline_noise: float
    cg_center: Tuple[float, float]
    cg_semi: Tuple[float, float, float]
    lesion: Optional[Tuple[float, float, float, float]]  # x, y, z in prostate frame, radius
    # rectum and coil
    endorectal_coil: bool
    rectum_x: float
    rectum_y: float
    rectum_semi: Tuple[float, float]
    rectum_wall: float
    rectum_curvature: float
    rectum_content: str  # "air", "stool" or "gel"
    balloon_semi: Tuple[float, float]
    balloon_z: Tuple[float, float]
    # bladder and seminal vesicles
    bladder_center: Tuple[float, float, float]
    bladder_semi: Tuple[float, float, float]
    bladder_wall: float
    sv_center: Tuple[float, float, float]  # right SV; left mirrored, prostate frame
    sv_semi: Tuple[float, float, float]
    sv_elevation_deg: float
    # pelvic cavity, muscles, bones, body
    cavity_center_y: float
    cavity_semi: Tuple[float, float]
    levator_thickness: float
    levator_gap: float
    bone_wall_x: float
    pubis_z: Tuple[float, float]
    pubic_sector: float  # cosine bound of the anterior sector
    lateral_sector: Tuple[float, float]  # cosine bounds of the lateral sector
    wall_radius: float
    cortex: float
    femoral_head: Tuple[float, float, float, float]  # x (right side, > 0), y, z, radius
    sacrum: Tuple[float, float, float, float, float]  # y0, z0, y1, z1, radius
    body_center_y: float
    body_semi: Tuple[float, float]
    subcutaneous_fat: float
    cleft_depth: float
    deformation_mm: float
    outer_deformation_mm: float
    fossa_center: Tuple[float, float]  # ischioanal fossa, right side (x > 0, mirrored), y
    fossa_semi: Tuple[float, float]
    fossa_z: Tuple[float, float]
    # below the apex and in front of the gland (prostate frame)
    sphincter_radius: float
    sphincter_length: float
    perineal_half_width: float
    perineal_depth: float
    perineal_fat: float  # fraction of fat mixed into the perineal muscles
    bulb_center: Tuple[float, float]  # yp, zp
    bulb_semi: Tuple[float, float, float]
    apron_thickness: float

    def prostate_extent_z(self) -> Tuple[float, float]:
        """Bounds on the patient ``z`` the prostate can reach: the tilted gland grown by 2.5 standard
        deviations of its outline noise, 1.5 times the deformation, and the scanner's 8-degree pitch and
        3-degree roll of the patient (``0.15`` of the depth, ``0.06`` of the width)."""
        t = np.deg2rad(self.tilt_deg)
        half = self.height * np.cos(t) + max(self.anterior, self.posterior) * abs(np.sin(t))
        half = (half * (1.0 + 2.5 * self.outline_noise) + 1.5 * self.deformation_mm
                + 0.15 * max(self.anterior, self.posterior) + 0.06 * self.lateral)
        return -half, half

    def coil_segment(self) -> Optional[Tuple[Tuple[float, float, float], Tuple[float, float, float]]]:
        """End points of the endorectal coil's receive element (patient mm), or ``None`` without a coil."""
        if not self.endorectal_coil:
            return None
        y = self.rectum_y - COIL_ANTERIOR_FRACTION * self.balloon_semi[1]
        z0, z1 = self.balloon_z
        return (self.rectum_x, y, z0 + 0.25 * (z1 - z0)), (self.rectum_x, y, z1 - 4.0)


def sample_pelvis(rng: np.random.Generator, endorectal_coil: bool) -> PelvisAnatomy:
    """Draw one patient: adult male pelvic anatomy, prostate about 15-120 mL, bladder of varying filling."""
    size = float(np.clip(np.exp(rng.normal(0.05, 0.15)), 0.82, 1.55))
    lateral = size * _u(rng, 22.0, 29.0)
    anterior = size * _u(rng, 14.0, 20.0)
    posterior = size * _u(rng, 11.0, 16.0)
    height = size * _u(rng, 17.0, 24.0)
    bph = float(np.clip((size - 0.8) / 0.5, 0.0, 1.0))  # larger glands carry a larger central gland
    cg_center = (-_u(rng, 0.1, 0.25), _u(rng, 0.05, 0.25))
    cg_semi = (_u(rng, 0.45, 0.6) + 0.2 * bph, _u(rng, 0.55, 0.7) + 0.15 * bph, _u(rng, 0.65, 0.85))
    lesion = None
    if rng.random() < 0.35:
        side = 1.0 if rng.random() < 0.5 else -1.0
        lesion = (side * _u(rng, 0.3, 0.65) * lateral, _u(rng, 0.3, 0.6) * posterior,
                  _u(rng, -0.5, 0.3) * height, _u(rng, 3.5, 7.5))

    rectum_x = _u(rng, -5.0, 5.0)
    if endorectal_coil:
        balloon_semi = (_u(rng, 19.0, 26.0), _u(rng, 14.0, 20.0))
        rectum_wall = _u(rng, 1.5, 2.5)
        rectum_y = posterior + _u(rng, 0.5, 2.5) + rectum_wall + balloon_semi[1]
        balloon_z = (-height - _u(rng, 12.0, 25.0), height + _u(rng, 0.0, 12.0))
        rectum_semi = (_u(rng, 11.0, 16.0), _u(rng, 5.0, 9.0))
    else:
        balloon_semi = (1.0, 1.0)
        balloon_z = (0.0, 1.0)
        rectum_semi = (_u(rng, 10.0, 17.0), _u(rng, 4.5, 9.0))
        rectum_wall = _u(rng, 3.0, 5.0)
        rectum_y = posterior + _u(rng, 2.0, 6.0) + rectum_wall + rectum_semi[1]
    content = ("air", "stool", "gel")[int(rng.choice(3, p=[0.45, 0.4, 0.15]))]
    rectum_post = rectum_y + (balloon_semi[1] if endorectal_coil else rectum_semi[1]) + rectum_wall

    bladder_semi = (_u(rng, 28.0, 50.0), _u(rng, 20.0, 36.0), _u(rng, 20.0, 38.0))
    bladder_center = (_u(rng, -6.0, 6.0), -_u(rng, 5.0, 18.0), height * _u(rng, 0.55, 0.9) + bladder_semi[2])
    sv_center = (_u(rng, 12.0, 18.0), posterior * _u(rng, 0.2, 0.6), height + _u(rng, 1.0, 7.0))
    sv_semi = (_u(rng, 13.0, 21.0), _u(rng, 3.5, 6.0), _u(rng, 5.0, 8.0))

    cavity_ant = -anterior - _u(rng, 12.0, 22.0)
    cavity_post = rectum_post + _u(rng, 15.0, 30.0)
    cavity_center_y = 0.5 * (cavity_ant + cavity_post)
    cavity_semi = (_u(rng, 40.0, 50.0), 0.5 * (cavity_post - cavity_ant))
    obturator = _u(rng, 10.0, 15.0)
    wall_radius = _u(rng, 6.0, 10.0)
    bone_wall_x = cavity_semi[0] + obturator + wall_radius
    pubis_z = (-height - _u(rng, 15.0, 25.0), height * _u(rng, 0.2, 0.6))
    head_radius = _u(rng, 21.0, 26.0)
    femoral_head = (bone_wall_x + wall_radius + _u(rng, 2.0, 6.0) + head_radius,
                    cavity_center_y - _u(rng, 0.0, 10.0), height + _u(rng, -5.0, 15.0), head_radius)
    sacrum_radius = _u(rng, 7.0, 10.0)
    sacrum = (cavity_post + 6.0 + sacrum_radius, -height - 10.0, cavity_post + _u(rng, 30.0, 45.0),
              height + 70.0, sacrum_radius)

    # ischioanal fossae: fat-filled wedges posterolateral to the rectum, below the levator ani, between
    # the obturator internus (lateral) and the gluteus maximus (posterior); about 5 cm deep and 2-3 cm wide
    # at the level of the prostate (anatomy textbooks, e.g. Gray's Anatomy, "ischioanal fossa")
    fossa_semi = (_u(rng, 15.0, 25.0), _u(rng, 25.0, 38.0))
    fossa_center = (_u(rng, 30.0, 42.0) + 0.5 * fossa_semi[0], rectum_y + _u(rng, 0.0, 15.0))
    fossa_z = (-height - _u(rng, 40.0, 60.0), height * _u(rng, 0.0, 0.6))
    # below the apex: membranous urethra 10-20 mm long in its striated sphincter, 12-18 mm across; perineal
    # muscles about 40-55 mm wide; bulb of the penis 20-30 mm wide under the perineal membrane (Gray's
    # Anatomy, "urogenital triangle"; MRI anatomy of the male pelvic floor)
    sphincter_radius = _u(rng, 6.0, 9.0)
    sphincter_length = _u(rng, 10.0, 20.0)
    bulb_semi = (_u(rng, 10.0, 15.0), _u(rng, 7.0, 11.0), _u(rng, 9.0, 14.0))
    bulb_center = (-0.2 * anterior + _u(rng, 0.0, 6.0), -height - sphincter_length - 0.7 * bulb_semi[2])
    perineal_half_width = _u(rng, 20.0, 28.0)
    perineal_depth = sphincter_length + _u(rng, 15.0, 30.0)
    # fat between fine muscle bundles, mixed into every voxel: real-case statistics of the region 10-20 mm below
    # the real apex: 0.6 std darker than the gland (pure muscle made it 1.2 std darker in the simulator) and more
    # uniform than the gland (interquartile range 0.57 vs 1.29; round 6 of docs/realism.md: painted as 3 mm blobs
    # of fat with fractions 0.25-0.6 it was less uniform than the gland at every site)
    perineal_fat = 0.5 * _u(rng, 0.25, 0.6)
    fat = _u(rng, 10.0, 35.0)
    body_ant = cavity_ant - obturator - 2.0 * wall_radius - _u(rng, 8.0, 25.0) - fat
    body_post = sacrum[2] + sacrum_radius + _u(rng, 5.0, 20.0) + fat
    body_lateral = femoral_head[0] + head_radius + _u(rng, 25.0, 50.0) + fat
    return PelvisAnatomy(
        lateral=lateral, anterior=anterior, posterior=posterior, height=height,
        tilt_deg=_u(rng, -5.0, 20.0), apex_taper=_u(rng, 0.25, 0.45), base_taper=_u(rng, 0.05, 0.2),
        anterior_narrowing=_u(rng, 0.15, 0.35), outline_noise=_u(rng, 0.03, 0.07),
        cg_center=cg_center, cg_semi=cg_semi, lesion=lesion,
        endorectal_coil=endorectal_coil, rectum_x=rectum_x, rectum_y=rectum_y, rectum_semi=rectum_semi,
        rectum_wall=rectum_wall, rectum_curvature=_u(rng, 0.002, 0.006), rectum_content=content,
        balloon_semi=balloon_semi, balloon_z=balloon_z,
        bladder_center=bladder_center, bladder_semi=bladder_semi, bladder_wall=_u(rng, 2.0, 3.5),
        sv_center=sv_center, sv_semi=sv_semi, sv_elevation_deg=_u(rng, 15.0, 35.0),
        cavity_center_y=cavity_center_y, cavity_semi=cavity_semi,
        levator_thickness=_u(rng, 4.0, 7.0), levator_gap=_u(rng, 1.0, 3.0),
        bone_wall_x=bone_wall_x, pubis_z=pubis_z, pubic_sector=_u(rng, 0.8, 0.9),
        lateral_sector=(-_u(rng, 0.55, 0.7), _u(rng, 0.2, 0.45)), wall_radius=wall_radius,
        cortex=_u(rng, 1.5, 2.5), femoral_head=femoral_head,
        sacrum=sacrum, body_center_y=0.5 * (body_ant + body_post),
        body_semi=(body_lateral, 0.5 * (body_post - body_ant)), subcutaneous_fat=fat,
        cleft_depth=_u(rng, 20.0, 45.0), deformation_mm=_u(rng, 2.0, 5.0),
        outer_deformation_mm=_u(rng, 3.0, 6.0),
        fossa_center=fossa_center, fossa_semi=fossa_semi, fossa_z=fossa_z,
        sphincter_radius=sphincter_radius, sphincter_length=sphincter_length,
        perineal_half_width=perineal_half_width, perineal_depth=perineal_depth, perineal_fat=perineal_fat,
        bulb_center=bulb_center, bulb_semi=bulb_semi, apron_thickness=_u(rng, 2.0, 4.0),
    )


@dataclass
class PelvisRender:
    """Rendered T2 signal and prostate fractions on the evaluation grid (all ``float32``).

    ``central_gland`` is the fraction of the voxel that is central gland (transition + central zone and
    anterior stroma), so the peripheral zone is ``prostate - central_gland``. ``annotated`` is the fraction
    inside the outline a site's annotators draw: the prostate's outline moved outward by the site's
    ``annotation_offset_mm`` (inward when negative); it equals ``prostate`` at offset 0.
    """

    signal: np.ndarray
    prostate: np.ndarray
    central_gland: np.ndarray
    annotated: np.ndarray


def _paint_bone(signal: np.ndarray, distance: np.ndarray, levels: T2Levels, cortex: float, width: float,
                marrow: np.ndarray) -> None:
    """Dark cortical shell of thickness ``cortex`` around fatty marrow."""
    blend(signal, fraction_inside(distance, width), levels.cortex)
    blend(signal, fraction_inside(distance + np.float32(cortex), width), marrow)


def render_pelvis(anatomy: PelvisAnatomy, levels: T2Levels, coords: Coords, spacing_mm: Sequence[float],
                  rng: np.random.Generator, supersampling: int = 1,
                  annotation_offset_mm: float = 0.0, ends: GlandEnds = GlandEnds()) -> PelvisRender:
    """Paint the T2 signal of ``anatomy`` at patient coordinates ``coords`` = ``(x, y, z)``.

    Args:
        anatomy: the patient.
        levels: tissue signals.
        coords: patient LPS coordinates (mm, prostate at 0) of every voxel of the evaluation grid, whose
            last axis holds ``supersampling`` consecutive sub-slices per written slice.
        spacing_mm: spacing of the *written* grid per array axis (the random fields are drawn on it and
            repeated over the sub-slices); ``spacing_mm[0]`` is also the width of partial-volume edges.
        rng: draws the deformation and texture fields (same draws, same image).
        supersampling: sub-slices per written slice.
        annotation_offset_mm: where the annotators put the outline, outward of the true capsule (mm);
            gives :attr:`PelvisRender.annotated`. It changes no signal.
        ends: how the gland darkens towards its apex and base (default: not at all).
    """
    a = anatomy
    shape = coords[0].shape
    if shape[-1] % supersampling:
        raise ValueError(f"last axis of coords ({shape[-1]}) is not a multiple of supersampling={supersampling}.")
    out_shape = shape[:-1] + (shape[-1] // supersampling,)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    width = float(spacing[0])
    f32 = np.float32

    def field(sigma_mm: float) -> np.ndarray:
        values = smooth_field(rng, out_shape, sigma_mm / spacing)
        return np.repeat(values, supersampling, axis=-1) if supersampling > 1 else values

    x, y, z = (c + f32(a.deformation_mm) * field(25.0) for c in coords)
    outer = [f32(a.outer_deformation_mm) * field(12.0) for _ in range(3)]
    xo, yo, zo = x + outer[0], y + outer[1], z + outer[2]
    del outer
    body_noise = field(40.0)
    outline_field = field(8.0)
    fascia_field = field(10.0)
    fine = field(1.0)
    mid = field(3.0)

    # ---- body: subcutaneous fat, gluteal cleft, muscle mass with fat planes
    by = a.body_center_y
    bx_semi, by_semi = a.body_semi
    d_body = ellipsoid_distance((x, y), (0.0, by), (bx_semi, by_semi)) + f32(10.0) * body_noise
    cleft_top = by + by_semi - a.cleft_depth
    d_cleft = np.abs(x) - f32(0.6) - f32(0.12) * np.maximum(y - f32(cleft_top), 0.0)
    d_cleft = np.where(y > f32(cleft_top), d_cleft, f32(50.0))
    d_body = np.maximum(d_body, -d_cleft)
    fat_texture = f32(levels.fat) * (1.0 + f32(0.1) * fine + f32(0.06) * mid)
    signal = fraction_inside(d_body, width) * fat_texture
    inner = (bx_semi - a.subcutaneous_fat, by_semi - a.subcutaneous_fat)
    d_muscle = ellipsoid_distance((xo, yo), (0.0, by), inner) + f32(6.0) * body_noise
    planes = np.maximum(_lines(fascia_field, 0.08) * np.clip(mid + f32(0.3), 0.0, 1.0), _lines(body_noise, 0.04))
    muscle_signal = f32(levels.muscle) * (1.0 + f32(0.08) * fine) * (1.0 - planes) + planes * fat_texture
    blend(signal, fraction_inside(d_muscle, width), muscle_signal)
    del d_body, d_cleft, d_muscle, muscle_signal

    # ---- pelvic cavity (fat with vessels), narrower anteriorly and towards the apex
    cy, (cx_semi, cy_semi) = a.cavity_center_y, a.cavity_semi
    narrowing = (1.0 + np.clip(zo, -60.0, 60.0) * f32(0.004)) * (
        1.0 - f32(0.15) * np.clip((f32(cy) - yo) * f32(1.0 / cy_semi), 0.0, 1.0))
    d_cavity = ellipsoid_distance((xo / narrowing, yo), (0.0, cy), (cx_semi, cy_semi)) + f32(4.0) * fascia_field
    vessels = f32(0.6) * _lines(fascia_field, 0.08) * np.clip(mid, 0.0, 1.0)
    cavity_signal = fat_texture * (1.0 - vessels) + vessels * f32(levels.muscle)
    blend(signal, fraction_inside(d_cavity, width), cavity_signal)
    del d_cavity, cavity_signal, vessels

    # ---- ischioanal fossae (fat with septa), mirrored, under the levator ani: the roof rises laterally
    fx, fy = a.fossa_center
    d_fossa = ellipsoid_distance((np.abs(xo), yo), (fx, fy), a.fossa_semi) + f32(4.0) * fascia_field
    roof = f32(a.fossa_z[1]) + f32(0.4) * (np.abs(xo) - f32(fx))
    d_fossa = np.maximum(d_fossa, np.maximum(zo - roof, f32(a.fossa_z[0]) - zo))
    septa = f32(0.5) * _lines(fascia_field, 0.06) * np.clip(mid + f32(0.5), 0.0, 1.0)
    blend(signal, fraction_inside(d_fossa, width), fat_texture * (1.0 - septa) + septa * f32(levels.muscle))
    del d_fossa, roof, septa

    # ---- bones (deformed with the outer field)
    marrow = f32(levels.marrow) * (1.0 + f32(0.12) * mid)
    xa = np.abs(xo)  # bilateral structures are mirrored
    # the bony ring: a shell outside the obturator internus, in an anterior (pubis) and lateral
    # (ischium / acetabulum) sector, open posterolaterally (sciatic notch) and at the obturator foramen
    ring_gap = a.bone_wall_x - a.wall_radius - a.cavity_semi[0]
    ring_offset = ring_gap + a.wall_radius
    d_ring = ellipsoid_distance((xo / narrowing, yo), (0.0, cy), (cx_semi + ring_offset, cy_semi + ring_offset))
    d_ring = np.abs(d_ring) - f32(a.wall_radius)
    radius = np.sqrt(xo * xo + (yo - f32(cy)) ** 2) + f32(1e-3)
    cos_post = (yo - f32(cy)) / radius  # +1 posterior, -1 anterior
    pubic_sector = np.clip((f32(-a.pubic_sector) - cos_post) * f32(8.0), 0.0, 1.0)
    lateral_sector = np.clip((f32(a.lateral_sector[1]) - cos_post) * f32(8.0), 0.0, 1.0) * np.clip(
        (cos_post - f32(a.lateral_sector[0])) * f32(8.0), 0.0, 1.0)
    sector = np.maximum(pubic_sector * (slab_distance(zo, *a.pubis_z) < 0),
                        lateral_sector * (slab_distance(zo, -a.height - 30.0, a.height + 45.0) < 0))
    d = d_ring + f32(20.0) * (1.0 - sector)
    _paint_bone(signal, d, levels, a.cortex, width, marrow)
    del d_ring, radius, cos_post, pubic_sector, lateral_sector, sector, narrowing
    hx, hy, hz, hr = a.femoral_head
    head = (hx, hy, hz)
    trochanter = (hx + 40.0, hy + 5.0, hz - 28.0)
    d = np.sqrt((xa - f32(hx)) ** 2 + (yo - f32(hy)) ** 2 + (zo - f32(hz)) ** 2) - f32(hr)
    d = np.minimum(d, segment_distance((xa, yo, zo), head, trochanter) - f32(0.55 * hr))
    d = np.minimum(d, segment_distance((xa, yo, zo), trochanter, (hx + 48.0, hy + 5.0, hz - 150.0)) - f32(0.6 * hr))
    _paint_bone(signal, d, levels, a.cortex, width, marrow)
    sy0, sz0, sy1, sz1, sr = a.sacrum
    d = segment_distance((xo, yo, zo), (0.0, sy0, sz0), (0.0, sy1, sz1)) - f32(sr)
    _paint_bone(signal, d, levels, a.cortex, width, marrow)
    del marrow, xa, xo, yo, zo

    # ---- the organs live in a box around the prostate: paint them on views of that box
    box = _organ_box(a, x, y, width)
    prostate = np.zeros(shape, dtype=np.float32)
    central = np.zeros(shape, dtype=np.float32)
    annotated = np.zeros(shape, dtype=np.float32)
    prostate[box], central[box], annotated[box] = _paint_organs(
        a, levels, (x[box], y[box], z[box]), signal[box], width, outline_field[box], fine[box], mid[box],
        annotation_offset_mm, ends)
    return PelvisRender(signal=signal, prostate=prostate, central_gland=central, annotated=annotated)


def _lines(values: np.ndarray, width_units: float) -> np.ndarray:
    """Thin sheets along the zero level set of a smooth field (fascia, septa, vessel walls)."""
    return np.exp(-((values * np.float32(1.0 / width_units)) ** 2))


def _organ_extent(a: PelvisAnatomy) -> Tuple[float, float, float]:
    """Half width (about the rectum axis), lowest and highest ``y`` (mm) reached by any pelvic organ."""
    rect_post = a.rectum_y + (a.balloon_semi[1] if a.endorectal_coil else a.rectum_semi[1]) + a.rectum_wall
    half_width = max(abs(a.bladder_center[0]) + a.bladder_semi[0], a.sv_center[0] + a.sv_semi[0],
                     max(a.lateral, a.balloon_semi[0] if a.endorectal_coil else a.rectum_semi[0])
                     + a.levator_gap + a.levator_thickness, 1.3 * a.lateral + 7.0,
                     a.perineal_half_width, a.bulb_semi[0]) + abs(a.rectum_x)
    y_low = min(a.bladder_center[1] - a.bladder_semi[1], -1.3 * a.anterior - 7.0)
    y_high = max(rect_post + 4.0, 1.3 * a.posterior + 7.0) + a.rectum_curvature * 60.0**2
    return half_width, y_low, y_high


def _organ_box(a: PelvisAnatomy, x: np.ndarray, y: np.ndarray, width: float):
    """Index box (tuple of slices) holding every voxel where an organ may have a non-zero fraction."""
    half_width, y_low, y_high = _organ_extent(a)
    margin = np.float32(2.0 * width + 3.0 * a.deformation_mm + 5.0)
    inside = (np.abs(x) < np.float32(half_width) + margin) & (y > np.float32(y_low) - margin) & (
        y < np.float32(y_high) + margin)
    box = []
    for axis in range(inside.ndim):
        other = tuple(i for i in range(inside.ndim) if i != axis)
        hits = np.flatnonzero(inside.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 0))
    return tuple(box)


def _paint_organs(a: PelvisAnatomy, levels: T2Levels, coords: Coords, signal: np.ndarray, width: float,
                  outline_field: np.ndarray, fine: np.ndarray, mid: np.ndarray, annotation_offset_mm: float = 0.0,
                  ends: GlandEnds = GlandEnds()):
    """Levator ani, bladder, seminal vesicles, rectum/balloon, venous plexus and prostate, painted in place.

    Returns the prostate, central-gland and annotated fractions (:class:`PelvisRender`) of the shape of ``signal``.
    """
    f32 = np.float32
    lines = _lines
    x, y, z = coords

    # ---- prostate frame and outline (needed by the organs that it indents)
    t = np.deg2rad(a.tilt_deg)
    xp = x
    yp = y * f32(np.cos(t)) - z * f32(np.sin(t))
    zp = y * f32(np.sin(t)) + z * f32(np.cos(t))
    w = zp * f32(1.0 / a.height)
    taper = 1.0 - f32(a.apex_taper) * np.clip(-w, 0.0, 1.0) ** 2 - f32(a.base_taper) * np.clip(w, 0.0, 1.0) ** 2
    depth = np.where(yp < 0, f32(a.anterior), f32(a.posterior)) * taper
    v = yp / depth
    lateral = f32(a.lateral) * taper * (1.0 - f32(a.anterior_narrowing) * np.clip(-v, 0.0, 1.0))
    u = xp / lateral
    modulation = 1.0 + f32(a.outline_noise) * outline_field
    r = np.sqrt(u * u + v * v + w * w)
    grad = np.sqrt((u / lateral) ** 2 + (v / depth) ** 2 + (w * f32(1.0 / a.height)) ** 2) / np.maximum(r, f32(1e-6))
    d_prostate = (r * modulation - 1.0) / np.maximum(grad, f32(1e-6))
    del grad, taper

    # ---- levator ani: a thin sling lateral to the prostate and behind the rectum, below the base
    rect_post = a.rectum_y + (a.balloon_semi[1] if a.endorectal_coil else a.rectum_semi[1]) + a.rectum_wall
    lev_center = 0.5 * (rect_post + 4.0 - a.anterior)
    lev_semi = (max(a.lateral, a.balloon_semi[0] if a.endorectal_coil else a.rectum_semi[0]) + a.levator_gap
                + a.levator_thickness,
                0.5 * (rect_post + 4.0 + a.anterior))
    d_lev = ellipsoid_distance((x, y), (a.rectum_x, lev_center), lev_semi)
    lev = fraction_inside(d_lev, width) - fraction_inside(d_lev + f32(a.levator_thickness), width)
    lev *= fraction_inside(lev_center - 0.2 * lev_semi[1] - y, width) * fraction_inside(z - f32(0.5 * a.height), 4.0)
    # its medial edge (pubococcygeus, puboprostatic part) follows the gland's anterolateral and lateral
    # surface at ``levator_gap`` (the lateral pelvic fascia and the neurovascular bundle between them)
    # below 0.7 of the gland's half height
    hug = (fraction_inside(d_prostate - f32(a.levator_gap + a.levator_thickness), width)
           - fraction_inside(d_prostate - f32(a.levator_gap), width))
    hug *= np.clip((np.abs(xp) * f32(1.0 / a.lateral) - f32(0.25)) * f32(4.0), 0.0, 1.0)
    hug *= fraction_inside(f32(-0.9 * a.anterior) - y, width) * fraction_inside(z - f32(0.7 * a.height), 4.0)
    blend(signal, np.maximum(lev, hug), levels.muscle * (1.0 + f32(0.15) * mid))
    del d_lev, lev, hug

    # ---- below the apex: perineal muscles between the rectum and the pubic arch (fat mixed in),
    # the external urethral sphincter around the membranous urethra, the bulb of the penis in its tunica
    above_apex = zp + f32(a.height)  # mm above the apex along the gland's axis
    rect_front = a.rectum_y - (a.balloon_semi[1] if a.endorectal_coil else a.rectum_semi[1]) - a.rectum_wall
    front = -a.anterior - 5.0
    d_perineal = ellipsoid_distance((x - f32(a.rectum_x), y), (0.0, 0.5 * (rect_front + front)),
                                    (a.perineal_half_width, 0.5 * (rect_front - front) + 2.0))
    perineal = fraction_inside(d_perineal, width) * fraction_inside(above_apex - f32(0.3 * a.height), 4.0) * (
        fraction_inside(-above_apex - f32(a.perineal_depth), 4.0))
    fatty = f32(a.perineal_fat)  # fat interspersed between fine bundles: a uniform admixture (round 6)
    blend(signal, perineal, levels.muscle * (1.0 + f32(0.12) * fine) * (1.0 - fatty)
          + fatty * f32(levels.fat) * (1.0 + f32(0.1) * fine))
    d_sphincter = np.sqrt(xp**2 + (yp + f32(0.2 * a.anterior)) ** 2)
    along = fraction_inside(above_apex - f32(0.4 * a.height), 4.0) * fraction_inside(
        -above_apex - f32(a.sphincter_length), 3.0)
    blend(signal, fraction_inside(d_sphincter - f32(a.sphincter_radius), width) * along,
          levels.muscle * (1.0 + f32(0.1) * fine))
    blend(signal, fraction_inside(d_sphincter - f32(2.0), width) * along, levels.urethra)
    d_bulb = ellipsoid_distance((xp, yp, zp), (0.0,) + tuple(a.bulb_center), a.bulb_semi)
    blend(signal, fraction_inside(d_bulb, width), levels.capsule)
    blend(signal, fraction_inside(d_bulb + f32(1.5), width), levels.spongiosum * (1.0 + f32(0.1) * fine))
    del above_apex, d_perineal, perineal, fatty, d_sphincter, along, d_bulb

    # ---- detrusor apron: a fibromuscular sheet on the gland's anterior surface, from the bladder neck down
    apron = (fraction_inside(d_prostate - f32(1.0 + a.apron_thickness), width)
             - fraction_inside(d_prostate - f32(1.0), width))
    apron *= fraction_inside(yp + f32(0.3 * a.anterior), width)  # in front of the gland
    blend(signal, apron, levels.muscle * (1.0 + f32(0.15) * mid))
    del apron

    # ---- bladder, its wall wrapping the prostate base
    d_bladder = ellipsoid_distance((x, y, z), a.bladder_center, a.bladder_semi)
    d_bladder = np.maximum(d_bladder, -(d_prostate - f32(1.0)))
    blend(signal, fraction_inside(d_bladder, width), levels.bladder_wall)
    blend(signal, fraction_inside(d_bladder + f32(a.bladder_wall), width), levels.urine)
    del d_bladder

    # ---- seminal vesicles (prostate frame, mirrored), convoluted: dark septa along zero-crossings of ``mid``
    e = np.deg2rad(a.sv_elevation_deg)
    cx, cy, cz = a.sv_center
    ax_long = (np.cos(e), 0.0, np.sin(e))
    xr = np.abs(xp) - f32(cx)
    q1 = xr * f32(ax_long[0]) + (zp - f32(cz)) * f32(ax_long[2])
    q3 = -xr * f32(ax_long[2]) + (zp - f32(cz)) * f32(ax_long[0])
    d_sv = ellipsoid_distance((q1, yp, q3), (0.0, cy, 0.0), (a.sv_semi[0], a.sv_semi[1], a.sv_semi[2]))
    sv_signal = f32(levels.sv_fluid) * (1.0 - f32(0.7) * lines(mid, 0.3))
    blend(signal, fraction_inside(d_sv, width), levels.bladder_wall)
    blend(signal, fraction_inside(d_sv + f32(1.0), width), sv_signal)
    del q1, q3, xr, d_sv, sv_signal

    # ---- rectum (and the endorectal coil's balloon)
    bend = np.maximum(z - f32(0.5 * a.height), 0.0) ** 2 + np.maximum(f32(-a.height - 15.0) - z, 0.0) ** 2
    ry = f32(a.rectum_y) + f32(a.rectum_curvature) * bend
    d_lumen = ellipsoid_distance((x - f32(a.rectum_x), y - ry), (0.0, 0.0), a.rectum_semi)
    if a.endorectal_coil:
        z0, z1 = a.balloon_z
        wz = (z - f32(0.5 * (z0 + z1))) * f32(2.0 / (z1 - z0))
        ub = (x - f32(a.rectum_x)) * f32(1.0 / a.balloon_semi[0])
        vb = (y - ry) * f32(1.0 / a.balloon_semi[1])
        d_balloon = (np.sqrt(ub * ub + vb * vb + wz**4) - 1.0) * f32(a.balloon_semi[1])
        d_lumen = np.minimum(d_lumen, d_balloon)
        del ub, vb, wz
    # the rectoprostatic (Denonvilliers') fascia and the rectal muscularis in front of the rectum: fibromuscular,
    # T2-dark, so the gland lies on a dark layer and not on fat in the coil's near field (round 5c, docs/realism.md)
    fascia = fraction_inside(d_lumen - f32(a.rectum_wall + RECTOPROSTATIC_FASCIA_MM), width)
    fascia *= fraction_inside(y - ry, width)  # the rectum's anterior side only
    blend(signal, fascia, levels.muscle)
    del fascia
    blend(signal, fraction_inside(d_lumen - f32(a.rectum_wall), width), levels.rectal_wall)
    blend(signal, fraction_inside(d_lumen - f32(1.2), width), levels.mucosa)
    if a.rectum_content == "air":
        content = f32(0.03) + f32(levels.stool) * np.clip(mid - f32(0.8), 0.0, 1.0)
    elif a.rectum_content == "stool":
        content = f32(levels.stool) * (1.0 + f32(0.3) * fine) * np.clip(mid + f32(1.2), 0.0, 1.0)
    else:
        content = f32(levels.gel) * (1.0 + f32(0.03) * fine)
    blend(signal, fraction_inside(d_lumen, width), content)
    if a.endorectal_coil:
        stripes = f32(0.01) + f32(0.012) * (1.0 + np.sin(x * f32(2.0 * np.pi / 6.0)))
        blend(signal, fraction_inside(d_balloon, width), stripes)
        del d_balloon, stripes
    del d_lumen, content, ry, bend

    # ---- periprostatic venous plexus: bright tortuous vessels in a 7 mm shell
    shell = fraction_inside(d_prostate - f32(7.0), width) - fraction_inside(d_prostate, width)
    veins = shell * np.clip((mid - f32(1.0)) * f32(2.0), 0.0, 1.0) * fraction_inside(y - f32(0.6 * a.posterior), width)
    blend(signal, veins, levels.vein)
    del shell, veins

    # ---- prostate: zones and textures
    prostate = fraction_inside(d_prostate, width)
    cu, cv, cw = a.cg_semi
    r_cg = np.sqrt((u / f32(cu)) ** 2 + ((v - f32(a.cg_center[0])) / f32(cv)) ** 2
                   + ((w - f32(a.cg_center[1])) / f32(cw)) ** 2) * (1.0 + f32(0.5 * a.outline_noise) * outline_field)
    stroma = fraction_inside((v + f32(0.78)) * f32(a.anterior), width)
    central = np.maximum(fraction_inside((r_cg - 1.0) * f32(cv * a.posterior), width), stroma) * prostate
    pz_signal = f32(levels.peripheral_zone) * (1.0 + f32(0.18) * fine) * (1.0 - f32(0.15) * np.clip(mid, 0.0, 2.0))
    cg_signal = f32(levels.central_gland) + f32(levels.nodule_contrast) * np.tanh(f32(1.6) * mid) + f32(0.08) * fine
    cg_signal = cg_signal * (1.0 - stroma) + stroma * f32(levels.stroma)
    gland = pz_signal * (prostate - central) + cg_signal * central
    gland *= ends.factor((1.0 - np.abs(w)) * f32(a.height))
    capsule = prostate - fraction_inside(d_prostate + f32(1.2), width)
    urethra_d = np.sqrt(xp**2 + (yp + f32(0.2 * a.anterior)) ** 2) - f32(2.5)
    urethra = fraction_inside(urethra_d, width) * prostate * fraction_inside(w - f32(0.85), 2.0)
    signal *= 1.0 - prostate
    signal += gland
    blend(signal, capsule * f32(0.7), levels.capsule)
    blend(signal, urethra * f32(0.7), levels.urethra)
    if a.lesion is not None:
        lx, ly, lz, lr = a.lesion
        d_lesion = np.sqrt((xp - f32(lx)) ** 2 + (yp - f32(ly)) ** 2 + (zp - f32(lz)) ** 2) - f32(lr)
        blend(signal, fraction_inside(d_lesion, 3.0) * prostate, levels.lesion)
    annotated = prostate if annotation_offset_mm == 0 else fraction_inside(d_prostate - f32(annotation_offset_mm), width)
    return prostate, central, annotated
