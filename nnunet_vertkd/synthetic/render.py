"""Draw a patient into a CT-like volume (Hounsfield units) and a bone-owner map on a world grid.

Bone: union of signed-distance primitives; voxels within ``cortical_mm`` of a bone surface get the bright
cortical value, deeper ones a textured cancellous value; partial-volume blending at the surface.
Soft tissue: body outline (neck, trunk, head) in air, subcutaneous fat, muscle, spinal canal, discs,
lungs at thoracic levels, aorta (sometimes contrast-enhanced). Then a little blur and noise.
"""
from typing import Tuple

import numpy as np
from scipy import ndimage

from . import bones
from .anatomy import RIB, SACRUM, SKULL, Patient
from .shapes import Grid, paint

AIR, FAT, LUNG, CSF = -1000.0, -100.0, -850.0, 20.0


def _smooth_noise(rng: np.random.Generator, shape, cell_vox: float) -> np.ndarray:
    """Smooth random field in about [-1, 1] with features of ``cell_vox`` voxels (cheap: coarse + zoom)."""
    coarse_shape = tuple(max(2, int(np.ceil(n / cell_vox)) + 1) for n in shape)
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    coords = np.meshgrid(*[np.linspace(0, c - 1, n, dtype=np.float32) for c, n in zip(coarse_shape, shape)],
                         indexing="ij", sparse=True)
    full = ndimage.map_coordinates(coarse, np.broadcast_arrays(*coords), order=1, mode="nearest")
    return np.clip(full / 1.5, -1, 1).astype(np.float32)


def draw_bones(patient: Patient, grid: Grid) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signed distance to bone, owner label, disc mask) on ``grid``; owner = VerSe label, RIB, SACRUM, SKULL."""
    dist = np.full(grid.shape, 1e3, dtype=np.float32)
    owner = np.zeros(grid.shape, dtype=np.uint8)
    thorax = thorax_shape(patient)
    for i, lv in enumerate(patient.levels[:-1]):
        for prim in bones.vertebra(patient, i):
            paint(grid, prim, dist, owner, lv.label)
        if lv.region == "thoracic":
            for prim in bones.ribs(patient, i, thorax):
                paint(grid, prim, dist, owner, RIB)
    for prim in bones.sacrum(patient):
        paint(grid, prim, dist, owner, SACRUM)
    for prim in bones.skull_base(patient):
        paint(grid, prim, dist, owner, SKULL)
    separate_neighbours(dist, owner, [lv.label for lv in patient.levels[:-1]])
    disc_dist = np.full(grid.shape, 1e3, dtype=np.float32)
    scratch = np.zeros(grid.shape, dtype=np.uint8)
    for i in range(len(patient.levels) - 1):
        prim = bones.disc(patient, i)
        if prim is not None:
            paint(grid, prim, disc_dist, scratch, 1)
    return dist, owner, (disc_dist <= 0) & (dist > 0)


def separate_neighbours(dist: np.ndarray, owner: np.ndarray, labels) -> None:
    """Where consecutive vertebrae touch, turn the lower one's contact voxels into soft tissue (a joint gap)."""
    boxes = ndimage.find_objects(owner)
    struct = ndimage.generate_binary_structure(3, 1)
    for a, b in zip(labels[:-1], labels[1:]):
        if a > len(boxes) or b > len(boxes) or boxes[a - 1] is None or boxes[b - 1] is None:
            continue
        sl = tuple(slice(max(min(x.start, y.start) - 1, 0), max(x.stop, y.stop) + 1)
                   for x, y in zip(boxes[a - 1], boxes[b - 1]))
        own = owner[sl]
        contact = ndimage.binary_dilation((own == a) & (dist[sl] <= 0), struct) & (own == b)
        if contact.any():
            dist[sl][contact] = 0.75
            own[contact] = 0


def thorax_shape(patient: Patient) -> dict:
    t = patient.tissue
    return {"a": t["trunk_a"] * 0.82 - t["fat"], "b": t["trunk_b"] * 0.8}


def _per_z(patient: Patient, grid: Grid):
    """Per-slice centre line and interpolated level sizes (arrays of length nz)."""
    zs = grid.zs.astype(np.float64)
    cl = patient.centre_line_at_z(zs)
    lv = patient.levels
    zc = np.array([patient.poses[v.label].c[2] for v in lv])[::-1]

    def interp(vals):
        return np.interp(zs, zc, np.asarray(vals, dtype=np.float64)[::-1])

    post = [v.D / 2 + v.canal_d + v.lam_t + v.sp_len * np.cos(np.deg2rad(v.sp_ang)) for v in lv]
    return dict(x=cl[:, 0], y=cl[:, 1], z=zs, W=interp([v.W for v in lv]), D=interp([v.D for v in lv]),
                canal_w=interp([v.canal_w for v in lv]), canal_d=interp([v.canal_d for v in lv]),
                post=interp(post))


def _smoothstep(x, a, b):
    t = np.clip((x - a) / (b - a), 0, 1) if b > a else (x >= a).astype(float)
    return t * t * (3 - 2 * t)


def draw_soft_tissue(patient: Patient, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """Soft-tissue HU (air, fat, muscle, lungs, canal, aorta) on ``grid``; bone and discs are added later."""
    t, s = patient.tissue, patient.scale
    pz = _per_z(patient, grid)
    zpos = {lab: patient.poses[lab].c[2] for lab in patient.poses}
    z = pz["z"]
    # body outline: head above C1, neck down to C7/T1, trunk below
    trunk = _smoothstep(-z, -zpos[7], -zpos[9])
    head = _smoothstep(z, zpos[1] + 5 * s, zpos[1] + 40 * s)
    A = (1 - trunk) * t["neck_r"] + trunk * t["trunk_a"]
    B = (1 - trunk) * t["neck_r"] * 1.15 + trunk * t["trunk_b"]
    A = (1 - head) * A + head * 75 * s
    B = (1 - head) * B + head * 80 * s
    y_skin = pz["y"] + pz["post"] + t["post_soft"] * (0.3 + 0.7 * trunk)
    y0 = y_skin - B

    def col(a):
        return np.asarray(a, dtype=np.float32)[:, None, None]

    X, Y = grid.xs[None, None, :], grid.ys[None, :, None]
    dx, dy = X - col(pz["x"]), Y - col(pz["y"])
    re = np.sqrt(((X - col(pz["x"])) / col(A)) ** 2 + ((Y - col(y0)) / col(B)) ** 2)
    ct = np.where(re <= 1.0, np.float32(t["muscle"]), np.float32(AIR)).astype(np.float32)
    fat_edge = 1.0 - col(t["fat"] / np.minimum(A, B))
    ct[(re <= 1.0) & (re > fat_edge)] = FAT
    # fat between the muscles: blobs of a smooth random field
    blobs = _smooth_noise(rng, grid.shape, max(3.0, 12 * s / float(grid.spacing.min())))
    ct[(blobs > 0.45) & (re < 1)] = FAT
    # airway in front of the cervical and upper thoracic spine
    if 11 in zpos:
        on = ((z <= zpos[1]) & (z >= zpos[11]))[:, None, None]
        ar = 8 * s
        ct[((dx ** 2 + (dy + col(pz["D"] / 2) + ar + 4 * s) ** 2) <= ar ** 2) & on & (re < 1)] = AIR
    # spinal canal
    cy = col(pz["D"] / 2 + pz["canal_d"] / 2)
    canal = (dx / col(pz["canal_w"] * 0.45)) ** 2 + ((dy - cy) / col(pz["canal_d"] * 0.45)) ** 2 <= 1
    ct[canal] = CSF
    # lungs beside the thoracic spine, inside the rib ring
    thor = thorax_shape(patient)
    tl = [lv for lv in patient.levels if lv.region == "thoracic"]
    z_lung_top = zpos[8] + tl[0].H / 2 + 8 * s
    z_lung_bot = zpos[tl[-2].label]
    f = np.sqrt(_smoothstep(z, z_lung_bot - 25 * s, z_lung_bot) * _smoothstep(-z, -z_lung_top, -z_lung_top + 35 * s))
    if np.any(f > 0):
        zl = np.array([patient.poses[lv.label].c[2] for lv in tl])[::-1]
        rings = np.array([bones.rib_ring(patient, lv, thor)[:3] for lv in tl])[::-1]
        r = bones.rib_radius(s) + 2 * s
        la = col(np.interp(z, zl, rings[:, 0]) - r) * col(np.maximum(f, 1e-3))
        lb = col(np.interp(z, zl, rings[:, 1]) - r) * col(np.maximum(f, 1e-3))
        lc = col(np.interp(z, zl, rings[:, 2]))
        inside = (dx / la) ** 2 + ((dy - lc) / lb) ** 2 <= 1
        medi = col(pz["W"] / 2 + 4 * s) + 0.6 * np.maximum(0, -col(pz["D"] / 2) - dy)
        lung = inside & (np.abs(dx) > medi) & (f > 0.05)[:, None, None] & (dy < col(pz["D"] / 2 + pz["canal_d"] * 1.5))
        ct[lung] = LUNG
    # aorta: left anterior of the bodies from T4 to L4
    if 11 in zpos and 23 in zpos:
        on = ((z <= zpos[11]) & (z >= zpos[23]))[:, None, None]
        ar = 11 * s
        aorta = ((dx - col(0.25 * pz["W"])) ** 2 + (dy + col(pz["D"] / 2) + ar + 3 * s) ** 2 <= ar ** 2) & on
        ct[aorta] = t["aorta"]
    tex = _smooth_noise(rng, grid.shape, max(3.0, 6 * s / float(grid.spacing.min())))
    soft = (ct > -500) & (ct < 500)
    ct[soft] += 12 * tex[soft]
    return ct


def render(patient: Patient, grid: Grid, rng: np.random.Generator, noise_sd: float, blur_mm: float,
           cortical_mm: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """(CT float32 HU, owner uint8) arrays [z, y, x]; mask voxels are bone voxels (distance <= 0)."""
    t = patient.tissue
    dist, owner, disc = draw_bones(patient, grid)
    ct = draw_soft_tissue(patient, grid, rng)
    ct[disc] = t["disc"]
    vox = float(grid.spacing.min())
    # cancellous bone: per-vertebra density and a smooth trabecular texture
    offsets = np.zeros(256, dtype=np.float32)
    offsets[1:30] = rng.normal(0, 20, 29)
    offsets[[RIB, SACRUM, SKULL]] = [30, 10, 150]
    canc = t["cancellous"] + offsets[owner] + 45 * _smooth_noise(rng, grid.shape, max(2.0, 2.0 / vox))
    tc = max(cortical_mm, 0.9 * float(grid.spacing.max()))
    frac_cort = np.clip(1.0 + dist / tc, 0, 1)
    bone_val = canc + (t["cortical"] - canc) * frac_cort
    alpha = np.clip(0.5 - dist / vox, 0, 1)  # partial-volume fraction of bone
    ct = alpha * bone_val + (1 - alpha) * ct
    sigma = [blur_mm / sp for sp in grid.spacing[::-1]]
    ct = ndimage.gaussian_filter(ct, sigma=sigma, truncate=2.5)
    ct += rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(noise_sd)
    owner[dist > 0] = 0
    return ct.astype(np.float32), owner
