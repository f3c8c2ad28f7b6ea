"""Patient anatomy: which vertebrae a spine has, their sizes, and where the curved spine puts them.

Sizes are adult values in millimetres (body height/depth/width, discs, canal, posterior elements),
interpolated between anchor levels so they grow from cervical to lumbar, then multiplied by the
anatomy ``scale``. The spine centre line (through the vertebral bodies) is built from its arc length:
cervical lordosis, thoracic kyphosis, lumbar lordosis, the sacral slope and a mild scoliosis, each with
random amplitude per patient. World frame: x left, y posterior, z superior (SimpleITK LPS), in mm.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from nnunet_vertkd.labels import VERSE_LABEL_NAMES

#: pseudo labels for bone that is never annotated
SACRUM, RIB, SKULL = 40, 41, 42

# Anchor levels on a continuous position axis: C1 = 0, ..., C7 = 6, T1 = 7, ..., T12 = 18, L1 = 19, ..., L5 = 23.
_ANCHORS = np.array([1, 2, 6, 7, 12, 18, 19, 23, 24], dtype=float)
#                         C2    C3    C7    T1    T6    T12   L1    L5    S1
_TABLE = {
    "H":       [15.0, 14.0, 14.5, 16.0, 19.0, 24.0, 26.0, 27.0, 28.0],   # body height
    "D":       [15.0, 16.0, 17.0, 17.0, 24.0, 30.0, 32.0, 34.0, 34.0],   # body depth (AP)
    "W":       [18.0, 19.0, 25.0, 28.0, 30.0, 40.0, 43.0, 50.0, 50.0],   # body width (LR)
    "disc":    [4.0, 5.0, 5.5, 4.0, 5.0, 7.0, 9.0, 11.0, 10.0],          # disc below the body
    "canal_w": [24.0, 24.0, 24.0, 18.0, 17.0, 19.0, 22.0, 24.0, 28.0],
    "canal_d": [15.0, 15.0, 14.0, 15.0, 16.0, 17.0, 18.0, 17.0, 14.0],
    "ped_w":   [5.0, 5.0, 5.5, 7.0, 5.5, 8.0, 8.0, 12.0, 12.0],           # pedicle width (LR)
    "ped_h":   [7.0, 6.5, 7.0, 9.0, 12.0, 15.0, 15.0, 15.0, 15.0],        # pedicle height (SI)
    "lam_t":   [5.0, 3.5, 4.0, 5.0, 5.5, 6.5, 7.0, 7.0, 7.0],             # lamina thickness
    "lam_h":   [10.0, 9.0, 10.0, 13.0, 16.0, 17.0, 17.0, 17.0, 17.0],     # lamina height (SI)
    "sp_len":  [25.0, 16.0, 33.0, 38.0, 42.0, 32.0, 32.0, 28.0, 15.0],    # spinous process length
    "sp_ang":  [15.0, 20.0, 15.0, 25.0, 55.0, 25.0, 10.0, 5.0, 10.0],     # its downward angle (deg)
    "sp_h":    [9.0, 6.0, 8.0, 8.0, 8.0, 11.0, 13.0, 13.0, 10.0],         # its SI height
    "sp_t":    [6.0, 4.0, 5.0, 5.0, 5.0, 6.0, 7.0, 8.0, 8.0],             # its LR thickness
    "tp_span": [55.0, 52.0, 68.0, 78.0, 70.0, 55.0, 70.0, 85.0, 95.0],    # transverse tip to tip
    "tp_r":    [4.0, 3.0, 3.5, 5.0, 5.0, 4.5, 4.0, 5.0, 6.0],
}


@dataclass
class LevelDims:
    label: int           # VerSe label, or SACRUM
    name: str
    region: str          # cervical / thoracic / lumbar / sacral
    pos: float           # continuous level position (C1 = 0)
    H: float
    D: float
    W: float
    disc: float          # disc below
    canal_w: float
    canal_d: float
    ped_w: float
    ped_h: float
    lam_t: float
    lam_h: float
    sp_len: float
    sp_ang: float
    sp_h: float
    sp_t: float
    tp_span: float
    tp_r: float


@dataclass
class Pose:
    """Centre of a vertebral body and its local axes u (left), v (posterior), w (superior) in world mm."""
    c: np.ndarray
    u: np.ndarray
    v: np.ndarray
    w: np.ndarray

    @property
    def axes(self) -> np.ndarray:
        return np.stack([self.u, self.v, self.w])

    def at(self, lu: float, lv: float, lw: float) -> np.ndarray:
        return self.c + lu * self.u + lv * self.v + lw * self.w


@dataclass
class Patient:
    scale: float
    variant: str                         # normal / T13 / L6
    levels: List[LevelDims]              # C1 ... last lumbar, then the sacrum (label SACRUM)
    poses: Dict[int, Pose]               # label -> pose
    curve_s: np.ndarray                  # centre line samples: arc length (mm, from the top of C1)
    curve_xyz: np.ndarray                # (n, 3) world points
    tissue: Dict[str, float] = field(default_factory=dict)   # soft-tissue shape and intensity parameters

    def level(self, label: int) -> LevelDims:
        return next(lv for lv in self.levels if lv.label == label)

    @property
    def vertebra_labels(self) -> List[int]:
        return [lv.label for lv in self.levels if lv.label != SACRUM]

    def centre_line_at_z(self, z: np.ndarray) -> np.ndarray:
        """(len(z), 3) centre-line point for world heights z (extended straight beyond its ends)."""
        zc = self.curve_xyz[::-1, 2]  # increasing
        return np.stack([np.interp(z, zc, self.curve_xyz[::-1, k]) for k in range(3)], axis=1)


def _dims(label: int, name: str, region: str, pos: float, scale: float, rng) -> LevelDims:
    vals = {k: float(np.interp(pos, _ANCHORS, v)) for k, v in _TABLE.items()}
    jitter = rng.normal(1.0, 0.03)
    out = {}
    for k, v in vals.items():
        if k == "sp_ang":
            out[k] = v + rng.normal(0, 4)
        else:
            out[k] = v * scale * (jitter if k in ("H", "D", "W") else rng.normal(1.0, 0.04))
    return LevelDims(label=label, name=name, region=region, pos=pos, **out)


def level_list(variant: str) -> List[tuple]:
    """(VerSe label, level position) from C1 down to the last lumbar vertebra.

    variant: "normal", "T13" (13 thoracic vertebrae, label 28) or "L6" (6 lumbar vertebrae, label 25).
    """
    out = [(lab, float(lab - 1)) for lab in range(1, 20)]
    if variant == "T13":
        out.append((28, 18.5))
    out += [(lab, float(lab - 1)) for lab in range(20, 25)]
    if variant == "L6":
        out.append((25, 23.6))
    return out


def _bump(s, s0, s1):
    """Raised-cosine window over [s0, s1] (smooth, 0 outside, 1 in the middle)."""
    t = np.clip((s - s0) / max(s1 - s0, 1e-6), 0, 1)
    return np.sin(np.pi * t) ** 2


def make_patient(rng: np.random.Generator, scale: float = 1.0, variant: Optional[str] = None,
                 min_disc_mm: float = 2.5) -> Patient:
    """Random adult spine (sizes x ``scale``); ``variant`` None draws normal / T13 / L6 (8 % each)."""
    if variant is None:
        variant = rng.choice(["normal", "T13", "L6"], p=[0.84, 0.08, 0.08])
    levels: List[LevelDims] = []
    for lab, pos in level_list(variant):
        name = VERSE_LABEL_NAMES[lab]
        region = {"C": "cervical", "T": "thoracic", "L": "lumbar"}[name[0]]
        levels.append(_dims(lab, name, region, pos, scale, rng))
    levels.append(_dims(SACRUM, "S", "sacral", 24.0, scale, rng))
    for lv in levels:
        lv.disc = max(lv.disc, min_disc_mm)
    levels[0].H = 14.0 * scale  # C1 has no body: height of its lateral masses
    levels[-2].disc = max(levels[-2].disc * rng.uniform(0.7, 1.0), min_disc_mm)  # L5/S1 often narrow

    # arc-length positions of body centres (C1 ring, then C2 whose dens reaches into it)
    s_centres, s = [], 0.0
    for i, lv in enumerate(levels):
        if i == 1:
            s += max(1.5 * scale, 1.2)  # C1-C2: no disc, the dens rises into the ring
        s_centres.append(s + lv.H / 2)
        s += lv.H + (lv.disc if i >= 1 else 0.0)
    s_centres = np.array(s_centres)
    total = s_centres[-1] + 4 * levels[-1].H

    # sagittal profile (posterior +) and mild scoliosis (left +)
    s_c7, s_t12, s_l5 = s_centres[6], s_centres[[lv.label for lv in levels].index(19)], s_centres[-2]
    s_grid = np.arange(-80.0 * scale, total + 1.0, 0.25)
    a_c = rng.uniform(6, 16) * scale
    a_t = rng.uniform(18, 40) * scale
    a_l = rng.uniform(12, 30) * scale
    y = (-a_c * _bump(s_grid, 0.0, s_c7 + 10 * scale) + a_t * _bump(s_grid, s_c7 - 10 * scale, s_t12 + 10 * scale)
         - a_l * _bump(s_grid, s_t12 - 5 * scale, s_l5 + 25 * scale))
    sac = np.clip(s_grid - (s_l5 + levels[-2].H / 2 + levels[-2].disc), 0, None)
    y = y + 0.55 * sac + 0.004 * sac ** 2 / scale
    y = y + rng.uniform(-0.05, 0.05) * s_grid
    a_s = rng.choice([0.0, rng.uniform(2, 8), rng.uniform(8, 16)], p=[0.3, 0.5, 0.2]) * scale
    period = rng.uniform(0.6, 1.2) * total
    x = a_s * np.sin(2 * np.pi * (s_grid - rng.uniform(0, total)) / period) * _bump(s_grid, -0.1 * total, 1.1 * total)
    dx, dy = np.gradient(x, s_grid), np.gradient(y, s_grid)
    dz = -np.sqrt(np.clip(1.0 - dx ** 2 - dy ** 2, 0.05, None))
    z = np.concatenate([[0.0], np.cumsum((dz[1:] + dz[:-1]) / 2 * np.diff(s_grid))])
    z -= np.interp(0.0, s_grid, z)
    xyz = np.stack([x, y, z], axis=1)
    xyz += rng.uniform(-30, 30, size=3)  # table position

    poses: Dict[int, Pose] = {}
    for lv, sc in zip(levels, s_centres):
        c = np.array([np.interp(sc, s_grid, xyz[:, k]) for k in range(3)])
        tang = np.array([np.interp(sc, s_grid, g) for g in (dx, dy, dz)])
        w = -tang / np.linalg.norm(tang)
        v = np.array([0.0, 1.0, 0.0]) - w[1] * w
        v /= np.linalg.norm(v)
        u = np.cross(v, w)
        # small axial rotation (more with scoliosis)
        ang = np.deg2rad(rng.normal(0, 2.0) + 40.0 * dx[np.searchsorted(s_grid, sc)])
        u, v = np.cos(ang) * u + np.sin(ang) * v, -np.sin(ang) * u + np.cos(ang) * v
        poses[lv.label] = Pose(c=c, u=u, v=v, w=w)

    tissue = dict(
        neck_r=rng.uniform(50, 65) * scale, trunk_a=rng.uniform(140, 175) * scale,
        trunk_b=rng.uniform(95, 125) * scale, post_soft=rng.uniform(15, 45) * scale,
        fat=rng.uniform(4, 25) * scale, cancellous=rng.uniform(170, 300), cortical=rng.uniform(700, 1000),
        muscle=rng.uniform(35, 60), disc=rng.uniform(70, 105),
        aorta=float(rng.choice([40.0, rng.uniform(150, 300)], p=[0.65, 0.35])),
    )
    return Patient(scale=scale, variant=str(variant), levels=levels, poses=poses, curve_s=s_grid, curve_xyz=xyz, tissue=tissue)


FOV_KINDS = ("cervical", "thoracic", "lumbar", "thoracolumbar", "whole")
#: a field of view of about 3-12 vertebrae (the border ones may be cut and unlabelled) starting at any level (C1 ... the third-last lumbar); chosen only when asked
#: for (``make_case(fov="anywhere")``), so the default mix of ``write_synthetic_verse`` is unchanged
ANYWHERE_FOV = "anywhere"


def fov_levels(patient: Patient, kind: str, rng: np.random.Generator) -> tuple:
    """Index range (first, last) into ``patient.levels`` of the vertebrae a field of view should show whole."""
    labels = [lv.label for lv in patient.levels]
    idx = {lab: i for i, lab in enumerate(labels)}
    last_lumbar = len(labels) - 2
    if kind == "cervical":
        first, last = 0, idx[int(rng.integers(6, 10))]
    elif kind == "thoracic":
        first, last = idx[int(rng.integers(7, 11))], idx[int(rng.integers(17, 21))]
    elif kind == "lumbar":
        first, last = idx[int(rng.integers(17, 21))], last_lumbar
    elif kind == "thoracolumbar":
        first, last = idx[int(rng.integers(10, 15))], last_lumbar
    elif kind == "whole":
        first, last = 0, last_lumbar
    elif kind == "upper":   # first scan of a patient split in two
        first, last = 0, idx[int(rng.integers(12, 15))]
    elif kind == "lower":   # second scan of that patient
        first, last = idx[int(rng.integers(11, 14))], last_lumbar
    elif kind == ANYWHERE_FOV:  # 3-12 vertebrae starting at any level (not in the default cycle; labelling tests)
        first = int(rng.integers(0, last_lumbar - 1))
        last = min(first + int(rng.integers(2, 12)), last_lumbar)
    else:
        raise ValueError(f"unknown field of view {kind!r}; choose from {FOV_KINDS + (ANYWHERE_FOV,)}")
    return first, last


def fov_z_range(patient: Patient, first: int, last: int, rng: np.random.Generator) -> tuple:
    """World (z_bottom, z_top): the chosen vertebrae, cutting through the neighbours (or skull / sacrum)."""
    lv, pz = patient.levels, patient.poses
    top = lv[first]
    z_top_body = pz[top.label].c[2] + top.H / 2
    if first == 0:
        z_top = z_top_body + rng.uniform(3, 20) * patient.scale + 2
    else:
        above = lv[first - 1]
        z_top = z_top_body + above.disc + rng.uniform(0.25, 0.8) * above.H
    bot = lv[last]
    z_bot_body = pz[bot.label].c[2] - bot.H / 2
    below = lv[last + 1]
    frac = rng.uniform(0.3, 0.9) if below.label == SACRUM else rng.uniform(0.25, 0.8)
    z_bot = z_bot_body - bot.disc - frac * below.H
    return z_bot, z_top
