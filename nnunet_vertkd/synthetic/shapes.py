"""Signed-distance primitives evaluated block-wise on an axis-aligned world grid.

World coordinates are SimpleITK's physical LPS frame in millimetres: x grows to the patient's left,
y to posterior, z to superior. A :class:`Grid` stores arrays indexed [k, j, i] = [z, y, x] (identity
direction cosines), so every primitive is evaluated only on the sub-block covering its bounding box.
Signed distances are negative inside; unions are taken with ``min``.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np


class Grid:
    """Axis-aligned voxel grid: ``origin`` (x, y, z) of voxel [0, 0, 0], ``spacing`` (x, y, z), shape (z, y, x)."""

    def __init__(self, origin: Sequence[float], spacing: Sequence[float], shape_zyx: Sequence[int]):
        self.origin = np.asarray(origin, dtype=np.float64)
        self.spacing = np.asarray(spacing, dtype=np.float64)
        self.shape = tuple(int(s) for s in shape_zyx)
        nz, ny, nx = self.shape
        self.xs = (self.origin[0] + self.spacing[0] * np.arange(nx)).astype(np.float32)
        self.ys = (self.origin[1] + self.spacing[1] * np.arange(ny)).astype(np.float32)
        self.zs = (self.origin[2] + self.spacing[2] * np.arange(nz)).astype(np.float32)

    def block(self, lo: np.ndarray, hi: np.ndarray):
        """(slices, Z, Y, X) covering the world box [lo, hi] (x, y, z), or None when it misses the grid.

        Z, Y, X are broadcastable coordinate arrays of shapes (nz,1,1), (1,ny,1), (1,1,nx).
        """
        i0 = np.floor((np.asarray(lo) - self.origin) / self.spacing).astype(int) - 1
        i1 = np.ceil((np.asarray(hi) - self.origin) / self.spacing).astype(int) + 2
        size_xyz = self.shape[::-1]
        i0 = np.maximum(i0, 0)
        i1 = np.minimum(i1, size_xyz)
        if np.any(i1 <= i0):
            return None
        sl = (slice(i0[2], i1[2]), slice(i0[1], i1[1]), slice(i0[0], i1[0]))
        z = self.zs[sl[0]][:, None, None]
        y = self.ys[sl[1]][None, :, None]
        x = self.xs[sl[2]][None, None, :]
        return sl, z, y, x


def _as_f(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


def _rounded_box2(dx, dy):
    """Combine two signed distances like a 2D box: exact outside, max inside."""
    return np.minimum(np.maximum(dx, dy), 0) + np.sqrt(np.maximum(dx, 0) ** 2 + np.maximum(dy, 0) ** 2)


class Primitive:
    def bbox(self) -> Tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def sdf(self, z, y, x) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Capsule(Primitive):
    """Segment a->b with radius growing linearly from ra (at a) to rb (at b)."""
    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: Optional[float] = None

    def __post_init__(self):
        self.a, self.b = _as_f(self.a), _as_f(self.b)
        if self.rb is None:
            self.rb = self.ra

    def bbox(self):
        r = max(self.ra, self.rb)
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r

    def sdf(self, z, y, x):
        ba = self.b - self.a
        px, py, pz = x - self.a[0], y - self.a[1], z - self.a[2]
        h = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) / max(float(ba @ ba), 1e-9), 0.0, 1.0)
        d = np.sqrt((px - ba[0] * h) ** 2 + (py - ba[1] * h) ** 2 + (pz - ba[2] * h) ** 2)
        return d - (self.ra + (self.rb - self.ra) * h)


@dataclass
class Plate(Primitive):
    """A capsule a->b of radius r swept +-half along the unit direction e (a rounded slab / stadium prism)."""
    a: np.ndarray
    b: np.ndarray
    r: float
    e: np.ndarray
    half: float

    def __post_init__(self):
        self.a, self.b, self.e = _as_f(self.a), _as_f(self.b), _as_f(self.e)
        self.e = self.e / np.linalg.norm(self.e)
        c = (self.a + self.b) / 2
        ap = self.a - c
        self._c = c
        self._ap = ap - (ap @ self.e) * self.e  # segment end, projected perpendicular to e

    def bbox(self):
        ext = self.half * np.abs(self.e) + self.r
        return np.minimum(self.a, self.b) - ext, np.maximum(self.a, self.b) + ext

    def sdf(self, z, y, x):
        e, ap = self.e, self._ap
        qx, qy, qz = x - self._c[0], y - self._c[1], z - self._c[2]
        qe = qx * e[0] + qy * e[1] + qz * e[2]
        # perpendicular part relative to the segment start -ap; the segment runs -ap -> +ap
        px, py, pz = qx - qe * e[0] + ap[0], qy - qe * e[1] + ap[1], qz - qe * e[2] + ap[2]
        ba = 2 * ap
        h = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) / max(float(ba @ ba), 1e-9), 0.0, 1.0)
        d2 = np.sqrt((px - ba[0] * h) ** 2 + (py - ba[1] * h) ** 2 + (pz - ba[2] * h) ** 2) - self.r
        return _rounded_box2(d2, np.abs(qe) - self.half)


class _Oriented(Primitive):
    """Base for shapes defined in a local frame (centre c, unit axes u, v, w as rows of R)."""

    def _setup(self, c, axes, extent):
        self.c = _as_f(c)
        self.R = _as_f(axes)  # rows: u, v, w
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * _as_f(extent)
        pts = self.c + corners @ self.R
        self._bbox = (pts.min(0), pts.max(0))

    def bbox(self):
        return self._bbox

    def _local(self, z, y, x):
        qx, qy, qz = x - self.c[0], y - self.c[1], z - self.c[2]
        u, v, w = self.R
        return (qx * u[0] + qy * u[1] + qz * u[2], qx * v[0] + qy * v[1] + qz * v[2],
                qx * w[0] + qy * w[1] + qz * w[2])


class Body(_Oriented):
    """Vertebral body / disc: a superelliptic cylinder along w.

    ``a``: half width (u), ``b_ant``/``b_post``: half depth towards anterior (-v) / posterior (+v),
    ``h``: half height; the posterior half is flatter (exponent ``p_post``); ``waist`` narrows the middle.
    """

    def __init__(self, c, axes, a, b_ant, b_post, h, p_post=3.0, waist=0.06, edge=1.0):
        self.a, self.b_ant, self.b_post, self.h = a, b_ant, b_post, h
        self.p_post, self.waist, self.edge = p_post, waist, min(edge, 0.45 * h, 0.45 * a)
        self._setup(c, axes, (a, max(b_ant, b_post), h))

    def sdf(self, z, y, x):
        lu, lv, lw = self._local(z, y, x)
        post = lv > 0
        rv = np.where(post, self.b_post, self.b_ant)
        p = np.where(post, self.p_post, 2.0)
        r = (np.abs(lu / self.a) ** p + np.abs(lv / rv) ** p) ** (1.0 / p)
        r = r / (1.0 - self.waist * (1.0 - np.clip(lw / self.h, -1, 1) ** 2))
        dr = (r - 1.0) * np.minimum(self.a, rv)
        return _rounded_box2(dr + self.edge, np.abs(lw) - self.h + self.edge) - self.edge


class Ellipsoid(_Oriented):
    """Ellipsoid with radii (ru, rv, rw); approximate signed distance; ``shell`` > 0 makes it hollow."""

    def __init__(self, c, axes, radii, shell: float = 0.0):
        self.radii = _as_f(radii)
        self.shell = shell
        self._setup(c, axes, self.radii + shell)

    def sdf(self, z, y, x):
        lu, lv, lw = self._local(z, y, x)
        ru, rv, rw = self.radii
        k0 = np.sqrt((lu / ru) ** 2 + (lv / rv) ** 2 + (lw / rw) ** 2)
        k1 = np.sqrt((lu / ru ** 2) ** 2 + (lv / rv ** 2) ** 2 + (lw / rw ** 2) ** 2)
        d = k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)
        if self.shell > 0:
            d = np.abs(d) - self.shell
        return d


class Difference(Primitive):
    """``keep`` minus ``cut`` (max(keep, -cut)); bounding box of ``keep``."""

    def __init__(self, keep: Primitive, cut: Primitive):
        self.keep, self.cut = keep, cut

    def bbox(self):
        return self.keep.bbox()

    def sdf(self, z, y, x):
        return np.maximum(self.keep.sdf(z, y, x), -self.cut.sdf(z, y, x))


def paint(grid: Grid, prim: Primitive, dist: np.ndarray, owner: np.ndarray, owner_id: int) -> None:
    """Union ``prim`` into the distance field ``dist`` (min), recording ``owner_id`` where it wins."""
    blk = grid.block(*prim.bbox())
    if blk is None:
        return
    sl, z, y, x = blk
    d = prim.sdf(z, y, x).astype(np.float32)
    d = np.broadcast_to(d, tuple(s.stop - s.start for s in sl))
    sub = dist[sl]
    win = d < sub
    sub[win] = d[win]
    owner[sl][win] = owner_id
