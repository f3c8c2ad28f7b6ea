"""Bony shapes as signed-distance primitives: vertebrae (body, pedicles, laminae, spinous, transverse and
articular processes; atlas and dens), intervertebral discs, ribs, sacrum and skull base."""
from typing import List, Optional

import numpy as np

from .anatomy import LevelDims, Patient, Pose
from .shapes import Body, Capsule, Difference, Ellipsoid, Plate, Primitive


def _atlas(lv: LevelDims, c2: LevelDims, p: Pose, s: float) -> List[Primitive]:
    """C1: anterior arch, lateral masses, posterior arch and wide transverse processes; no body."""
    h = lv.H / 2
    dens_v, dens_r = -0.1 * c2.D, 0.27 * c2.D
    arch_r = max(2.2 * s, 0.9)
    v_a = dens_v - dens_r - max(1.2 * s, 1.0) - arch_r
    lm_u, lm_v = dens_r + 14 * s, dens_v + 4 * s
    v_post = dens_v + dens_r + 28 * s
    prims: List[Primitive] = [
        Capsule(p.at(-10 * s, v_a + 3 * s, 0), p.at(0, v_a, 0), arch_r),
        Capsule(p.at(0, v_a, 0), p.at(10 * s, v_a + 3 * s, 0), arch_r),
    ]
    for sg in (-1, 1):
        prims += [
            Capsule(p.at(sg * 10 * s, v_a + 3 * s, 0), p.at(sg * lm_u, lm_v - 4 * s, 0), arch_r),
            Ellipsoid(p.at(sg * lm_u, lm_v, 0), p.axes, (7 * s, 10 * s, h)),
            Capsule(p.at(sg * lm_u, lm_v + 8 * s, -1 * s), p.at(sg * 12 * s, v_post - 2 * s, 0), arch_r),
            Capsule(p.at(sg * 12 * s, v_post - 2 * s, 0), p.at(0, v_post, 0), arch_r * 1.2),
            Capsule(p.at(sg * lm_u, lm_v, 0), p.at(sg * lv.tp_span / 2, lm_v, -1 * s), lv.tp_r * 1.2, lv.tp_r),
        ]
    return prims


def _posterior(lv: LevelDims, p: Pose, s: float, disc_above: float) -> List[Primitive]:
    """Pedicles, laminae, articular, spinous and transverse processes of a C2-L6 vertebra."""
    H, D = lv.H, lv.D
    v_c = D / 2 + lv.canal_d / 2                  # canal centre
    px = lv.canal_w / 2 + lv.ped_w / 2            # pedicle centre line (u)
    w_p = 0.15 * H
    v_lam = v_c + 0.3 * lv.canal_d                # pedicle-lamina junction
    v_mid = v_c + lv.canal_d / 2 + lv.lam_t / 2   # lamina at the midline
    w_l = -0.05 * H
    prims: List[Primitive] = []
    ap_r = max(0.42 * lv.ped_w, 1.0)
    gap = max(0.8 * s, 0.9)
    for sg in (-1, 1):
        prims.append(Plate(p.at(sg * px, D / 2 - 0.12 * D, w_p), p.at(sg * px, v_lam, w_p), lv.ped_w / 2, p.w,
                           lv.ped_h / 2))
        prims.append(Plate(p.at(sg * px, v_lam, w_l), p.at(0, v_mid, w_l), lv.lam_t / 2, p.w, lv.lam_h / 2))
        # articular processes: superior ones rise towards the vertebra above, inferior ones sit behind
        # the superior processes of the vertebra below, with a small joint gap
        v_sup = v_lam - 0.1 * lv.canal_d
        v_inf = v_sup + 2 * ap_r + gap
        prims.append(Capsule(p.at(sg * px, v_sup, 0.1 * H), p.at(sg * px, v_sup, H / 2 + 0.45 * disc_above), ap_r))
        prims.append(Capsule(p.at(sg * 0.9 * px, v_inf, -0.1 * H), p.at(sg * 0.9 * px, v_inf, -H / 2 - 0.45 * lv.disc),
                             ap_r))
        # transverse processes
        if lv.region == "cervical":
            root, tip = p.at(sg * (lv.W / 2), 0.1 * D, 0.1 * H), p.at(sg * lv.tp_span / 2, 0.25 * D, 0)
        elif lv.region == "thoracic":
            root = p.at(sg * px, v_lam, w_p)
            tip = p.at(sg * lv.tp_span / 2, v_lam + 0.45 * lv.canal_d, w_p + 0.1 * H)
        else:
            root = p.at(sg * px, v_lam - 0.2 * lv.canal_d, w_p)
            tip = p.at(sg * lv.tp_span / 2, v_lam - 0.1 * lv.canal_d, w_p + 0.05 * H)
        prims.append(Capsule(root, tip, lv.tp_r * 1.25, lv.tp_r * 0.85))
    # spinous process: a sagittal plate pointing posterior and down, with a rounded tip
    ang = np.deg2rad(lv.sp_ang)
    base = p.at(0, v_mid, w_l)
    tip = p.at(0, v_mid + lv.sp_len * np.cos(ang), w_l - lv.sp_len * np.sin(ang))
    prims.append(Plate(base, tip, lv.sp_h / 2, p.u, lv.sp_t / 2))
    return prims


def vertebra(patient: Patient, index: int) -> List[Primitive]:
    """Primitives of vertebra ``patient.levels[index]`` (not the sacrum)."""
    lv = patient.levels[index]
    p = patient.poses[lv.label]
    s = patient.scale
    if lv.label == 1:
        return _atlas(lv, patient.levels[1], p, s)
    disc_above = patient.levels[index - 1].disc if index > 1 else 3 * s
    prims: List[Primitive] = [Body(p.c, p.axes, lv.W / 2, lv.D / 2, 0.9 * lv.D / 2, lv.H / 2,
                                   edge=max(1.2 * s, 0.7))]
    if lv.label == 2:  # dens rising into the atlas ring
        dens_r = 0.27 * lv.D
        c1 = patient.levels[0]
        tip = np.dot(patient.poses[1].c - p.c, p.w) + 0.2 * c1.H - 0.8 * dens_r
        prims.append(Capsule(p.at(0, -0.1 * lv.D, lv.H / 2 - dens_r), p.at(0, -0.1 * lv.D, tip),
                             dens_r, 0.8 * dens_r))
    prims += _posterior(lv, p, s, disc_above)
    return prims


def disc(patient: Patient, index: int) -> Optional[Primitive]:
    """Intervertebral disc below ``patient.levels[index]`` (None below C1)."""
    if index == 0 or index >= len(patient.levels) - 1:
        return None
    up, lo = patient.levels[index], patient.levels[index + 1]
    pu, pl = patient.poses[up.label], patient.poses[lo.label]
    c = (pu.at(0, 0, -up.H / 2) + pl.at(0, 0, lo.H / 2)) / 2
    w = pu.w + pl.w
    w /= np.linalg.norm(w)
    v = (pu.v + pl.v) - ((pu.v + pl.v) @ w) * w
    v /= np.linalg.norm(v)
    axes = np.stack([np.cross(v, w), v, w])
    half = np.linalg.norm(pu.at(0, 0, -up.H / 2) - pl.at(0, 0, lo.H / 2)) / 2 + 1.5
    return Body(c, axes, 0.47 * (up.W + lo.W) / 2, 0.47 * (up.D + lo.D) / 2, 0.42 * (up.D + lo.D) / 2, half,
                edge=0.5)


def sacrum(patient: Patient) -> List[Primitive]:
    """S1 body with alae, and the tapering sacral mass below it along the centre line (never annotated)."""
    lv = patient.levels[-1]
    p = patient.poses[lv.label]
    s = patient.scale
    prims: List[Primitive] = [Body(p.c, p.axes, lv.W / 2, lv.D / 2, 0.9 * lv.D / 2, lv.H / 2, edge=max(s, 0.7))]
    for sg in (-1, 1):
        prims.append(Plate(p.at(sg * lv.W / 3, 0.2 * lv.D, 0.1 * lv.H), p.at(sg * lv.tp_span / 2, 0.5 * lv.D, 0),
                           0.25 * lv.H, p.w, 0.35 * lv.H))
        prims.append(Plate(p.at(sg * lv.tp_span / 2.4, 0.7 * lv.D, 0), p.at(sg * 3 * s, lv.D, 0),
                           5 * s, p.w, 0.4 * lv.H))
    # S2-S4: smaller bodies following the centre line downwards
    s_c = float(np.interp(p.c[2], patient.curve_xyz[::-1, 2], patient.curve_s[::-1]))
    for k, f in enumerate((0.85, 0.7, 0.5)):
        s_k = s_c + lv.H * (0.5 + 0.8 * (k + 1) - 0.4 + 0.4 * f)
        ck = np.array([np.interp(s_k, patient.curve_s, patient.curve_xyz[:, j]) for j in range(3)])
        prims.append(Body(ck, p.axes, f * lv.W / 2, f * lv.D / 2, f * 0.8 * lv.D / 2, 0.45 * lv.H, edge=max(s, 0.7)))
        prims.append(Plate(ck + p.v * 0.4 * lv.D - p.u * f * lv.W / 1.5, ck + p.v * 0.4 * lv.D + p.u * f * lv.W / 1.5,
                           5 * s, p.w, 0.4 * lv.H))
    return prims


def rib_radius(scale: float) -> float:
    return max(3.2 * scale, 1.2)


def rib_ring(patient: Patient, lv: LevelDims, thorax: dict):
    """Ellipse (half axes a, b, centre v offset, start angle) in a thoracic vertebra's frame along which its
    ribs run; it passes just behind the transverse process tips and widens over the upper ribs."""
    r = rib_radius(patient.scale)
    ring = 0.55 + 0.45 * np.clip((lv.pos - 6) / 4.0, 0, 1)
    ae, be = thorax["a"] * ring, thorax["b"] * (0.7 + 0.3 * ring)
    ut = lv.tp_span / 2 + r * 0.6
    vt = lv.D / 2 + lv.canal_d / 2 + 0.75 * lv.canal_d - r * 1.3
    th1 = float(np.arcsin(np.clip(ut / ae, -0.95, 0.95)))
    return ae, be, vt - be * np.cos(th1), th1


def ribs(patient: Patient, index: int, thorax: dict) -> List[Primitive]:
    """Left and right rib of thoracic vertebra ``index``: from the body along the thorax wall, descending."""
    lv = patient.levels[index]
    p = patient.poses[lv.label]
    s = patient.scale
    r = rib_radius(s)
    v_lam = lv.D / 2 + lv.canal_d / 2 + 0.3 * lv.canal_d
    start_w = 0.2 * lv.H
    prims: List[Primitive] = []
    ae, be, v_ce, th1 = rib_ring(patient, lv, thorax)
    for sg in (-1, 1):
        joint = p.at(sg * (lv.W / 2 + r + max(1.0 * s, 0.8)), 0.3 * lv.D, start_w)
        tp_tip = p.at(sg * (lv.tp_span / 2 + r * 0.6), v_lam + 0.45 * lv.canal_d - r * 1.3, start_w)
        pts = [joint, tp_tip]
        drop = 1.6 * (lv.H + lv.disc)
        for th in np.linspace(th1, np.deg2rad(170), 12)[1:]:
            w = start_w - drop * (th - th1) / np.pi
            pts.append(p.at(sg * ae * np.sin(th), v_ce + be * np.cos(th), w))
        for a, b in zip(pts[:-1], pts[1:]):
            prims.append(Capsule(a, b, r))
    return prims


def skull_base(patient: Patient) -> List[Primitive]:
    """Lower part of the skull above the atlas, with the foramen magnum (never annotated)."""
    s = patient.scale
    c1 = patient.poses[1]
    c = c1.at(0, 5 * s, 0) + np.array([0, 0, 1.0]) * (patient.levels[0].H / 2 + 64 * s)
    shell = Ellipsoid(c, np.eye(3), (70 * s, 85 * s, 58 * s), shell=max(3.5 * s, 1.2))
    hole = Capsule(c1.at(0, 5 * s, 0), c, 17 * s)
    return [Difference(shell, hole)]
