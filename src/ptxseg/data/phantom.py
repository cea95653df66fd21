"""Synthetic frontal chest radiographs with pneumothorax and the NIH ChestX-ray14 findings.

The anatomy lives in a patient frame (units of image width, origin at the thorax centre, x towards
the image right = the patient's left, y down) mapped to pixels by a random similarity transform, so
everything scales with ``size`` and position/rotation vary without resampling the image (which
would blur the pneumothorax edges away from their masks).

Brightness is built up as a "density" map (about 0 = air, 1 = bone over the mediastinum) and then
mapped to 8 bits by a per-image window/gamma table, MONOCHROME2 (bright = dense). Smooth structures
are drawn on a grid of at most 256 x 256 and upsampled; fine ones (vessels, ribs, pleural line,
masks) at full size with OpenCV drawing calls.

Randomness: the caller's generator only draws one seed per independent stream (anatomy, vessels,
texture, noise, pneumothorax, one per finding), so adding a finding to the same seed changes that
finding's pixels and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from ptxseg.data.findings import FINDINGS

_LO_MAX = 256  # side of the grid for smooth structures
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_STREAMS = ("anatomy", "vessels", "texture", "noise", "pneumothorax")
_SIDES = (-1.0, 1.0)  # image left (patient's right lung), image right (patient's left lung)


@dataclass(frozen=True)
class RenderedChest:
    image: np.ndarray  # (size, size) uint8, MONOCHROME2
    pneumothorax: list[np.ndarray]  # one (size, size) bool mask per region; [] if none
    lung_fields: np.ndarray | None = None  # (size, size) bool, both lungs (for checks)


# ----------------------------------------------------------------------------------- small tools


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _fixed(pts: np.ndarray) -> np.ndarray:
    """Pixel coordinates as OpenCV's fixed-point int32 points."""
    return np.round(np.asarray(pts) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _fill(shape: tuple[int, int], polys: Sequence[np.ndarray], value: int = 255) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    for p in polys:  # one call each: several polygons in one call fill by the even-odd rule
        cv2.fillPoly(out, [_fixed(p)], value, cv2.LINE_8, _SHIFT)
    return out


def _polyline(canvas, pts, value, thickness, closed=False, line=cv2.LINE_AA) -> None:
    cv2.polylines(canvas, [_fixed(pts)], closed, value, max(1, thickness), line, _SHIFT)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), max(float(sigma), 0.3))


def _up(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size:
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)


def _catmull_rom(ctrl: np.ndarray, per_segment: int = 16, closed: bool = True) -> np.ndarray:
    """Smooth curve through control points; a repeated point makes a sharp corner."""
    p = np.asarray(ctrl, np.float64)
    if closed:
        p0, p1, p2, p3 = np.roll(p, 1, 0), p, np.roll(p, -1, 0), np.roll(p, -2, 0)
    else:
        q = np.concatenate([p[:1], p, p[-1:]])
        p0, p1, p2, p3 = q[:-3], q[1:-2], q[2:-1], q[3:]
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[None, :, None]
    p0, p1, p2, p3 = (a[:, None, :] for a in (p0, p1, p2, p3))
    curve = 0.5 * (
        2 * p1
        + (p2 - p0) * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
        + (3 * p1 - p0 - 3 * p2 + p3) * t**3
    )
    curve = curve.reshape(-1, 2)
    return curve if closed else np.concatenate([curve, p[-1:]])


def _smooth_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Unit-variance random field on an n x n grid with about `cells` blobs across."""
    g = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    field = cv2.resize(g, (n, n), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _offset(pts: np.ndarray, dist: float) -> np.ndarray:
    """Polyline shifted sideways by `dist` (pixels) along its normals."""
    tangent = np.gradient(pts, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    return pts + dist * np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)


# ------------------------------------------------------------------------------ frame & anatomy


@dataclass(frozen=True)
class _Frame:
    """Patient frame -> pixels; `lo` is the side of the grid smooth structures are drawn on."""

    size: int
    lo: int
    matrix: np.ndarray  # 2x3, patient -> full-size pixel

    def px(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts) @ self.matrix[:, :2].T + self.matrix[:, 2]

    def lo_px(self, pts: np.ndarray) -> np.ndarray:
        # Same pixel-centre convention as cv2.resize, so lo layers line up after upsampling.
        return (self.px(pts) + 0.5) * (self.lo / self.size) - 0.5

    def lo_grid(self) -> tuple[np.ndarray, np.ndarray]:
        c = (np.arange(self.lo) + 0.5) * (self.size / self.lo) - 0.5
        gx, gy = np.meshgrid(c, c)
        inv = np.linalg.inv(self.matrix[:, :2])
        dx, dy = gx - self.matrix[0, 2], gy - self.matrix[1, 2]
        return (
            (inv[0, 0] * dx + inv[0, 1] * dy).astype(np.float32),
            (inv[1, 0] * dx + inv[1, 1] * dy).astype(np.float32),
        )

    def scale(self) -> float:
        return float(np.hypot(*self.matrix[:, 0]))  # pixels per patient unit

    def lo_scale(self) -> float:
        return self.scale() * self.lo / self.size  # lo pixels per patient unit


@dataclass(frozen=True)
class _Anatomy:
    width: float  # thorax half-width at the lung bases
    apex: float  # y of the lung apices
    dome: tuple[float, float]  # y of each hemidiaphragm dome (image left, image right)
    cp_drop: tuple[float, float]  # costophrenic angle below the dome
    lateral: tuple[float, float]  # lateral lung border, fraction of `width`
    dome_x: tuple[float, float]  # dome top, fraction of `width` from the midline
    heart: tuple[float, float, float, float, float]  # centre x, y, semi-axes a, b, tilt
    mediastinum: float  # half-width of the upper mediastinum
    air: float  # how much darker aerated lung is than soft tissue
    neck: float
    shoulder: float  # shoulders beyond the chest wall
    arms: bool
    breasts: float  # 0 for none
    bubble: bool  # gastric air bubble under the left dome
    rib_top: float  # y of the first posterior rib at the spine
    rib_gap: float  # spacing of the posterior ribs at the spine (grows a little downwards)
    rib_drop: float  # how steeply posterior ribs slope laterally
    rib_jitter: np.ndarray  # (2, 10) small per-rib offsets
    rib_width: float
    bone: float  # bone contrast
    vessel_gain: float
    vessel_prune: float  # gain of the distal vessel generations
    lung_volume: float  # 1 = normal; scales the lungs about the hila (atelectasis, fibrosis)


def _sample_frame(rng: np.random.Generator, size: int) -> _Frame:
    scale = size * rng.uniform(0.9, 1.05)
    rot = float(np.clip(rng.normal(0.0, 0.025), -0.06, 0.06))
    cx = size * (0.5 + rng.normal(0.0, 0.015))
    cy = size * (0.47 + rng.normal(0.0, 0.02))
    c, s = np.cos(rot) * scale, np.sin(rot) * scale
    return _Frame(size, min(size, _LO_MAX), np.array([[c, -s, cx], [s, c, cy]]))


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    apex, dome_r = rng.uniform(-0.335, -0.29), rng.uniform(0.17, 0.23)
    heart_y = dome_r - rng.uniform(0.045, 0.07)
    rib_top = apex - rng.uniform(0.025, 0.045)
    # The tenth posterior rib reaches the dome on a good inspiration.
    rib_gap = (dome_r + rng.uniform(-0.03, 0.01) - rib_top) / (9 * 1.27)
    return _Anatomy(
        width=rng.uniform(0.35, 0.4),
        apex=apex,
        dome=(dome_r, dome_r + rng.uniform(0.005, 0.04)),
        cp_drop=(rng.uniform(0.06, 0.1), rng.uniform(0.06, 0.1)),
        lateral=(rng.uniform(0.93, 0.97), rng.uniform(0.9, 0.95)),
        dome_x=(rng.uniform(0.4, 0.52), rng.uniform(0.45, 0.56)),
        heart=(
            rng.uniform(0.045, 0.065),
            heart_y,
            rng.uniform(0.15, 0.17),
            rng.uniform(0.1, 0.115),
            rng.uniform(0.25, 0.5),
        ),
        mediastinum=rng.uniform(0.048, 0.06),
        air=rng.uniform(0.6, 0.68),
        neck=rng.uniform(0.065, 0.085),
        shoulder=rng.uniform(0.07, 0.12),
        arms=bool(rng.random() < 0.35),
        breasts=float(rng.uniform(0.05, 0.09)) if rng.random() < 0.35 else 0.0,
        bubble=bool(rng.random() < 0.6),
        rib_top=rib_top,
        rib_gap=rib_gap,
        rib_drop=rng.uniform(0.85, 1.15),
        rib_jitter=rng.normal(0.0, 0.003, (2, 10)),
        rib_width=rng.uniform(0.016, 0.02),
        bone=rng.uniform(0.8, 1.2),
        vessel_gain=rng.uniform(0.8, 1.2),
        vessel_prune=1.0,
        lung_volume=1.0,
    )


def _hilum(a: _Anatomy, side: int) -> np.ndarray:
    # The left hilum sits a little further out and higher than the right one.
    return np.array([_SIDES[side] * (a.mediastinum + 0.04 + 0.01 * side), -0.06 - 0.02 * side])


def _lung_outline(a: _Anatomy, side: int) -> np.ndarray:
    """Closed outline of one lung (patient frame); the medial side is cut later by the heart."""
    s, w = _SIDES[side], a.width
    top, dome = a.apex, a.dome[side]
    cp = dome + a.cp_drop[side]
    lat, dx = a.lateral[side] * w, a.dome_x[side] * w
    ctrl = [
        (0.36 * w, top),
        (0.52 * w, top + 0.02),
        (0.68 * w, top + 0.08),
        (0.81 * w, top + 0.18),
        (0.90 * w, top + 0.30),
        (lat, cp - 0.12),
        (lat + 0.004, cp - 0.04),
        (lat - 0.005, cp),  # costophrenic angle: doubled for a sharp corner
        (lat - 0.005, cp),
        (0.5 * (lat + dx) + 0.03, dome + 0.45 * (cp - dome)),
        (dx, dome),
        (0.22 * w, dome + 0.015),
        (0.02, dome + 0.01),
        (0.02, 0.0),
        (0.025, top + 0.10),
        (0.20 * w, top + 0.015),
    ]
    pts = _catmull_rom(np.array(ctrl))
    pts[:, 0] *= s
    if a.lung_volume != 1.0:  # shrink towards the hilum, mostly from below
        h = _hilum(a, side)
        pts = h + (pts - h) * np.array([0.5 + 0.5 * a.lung_volume, a.lung_volume])
    return pts


def _heart_outline(a: _Anatomy) -> np.ndarray:
    x, y, ha, hb, tilt = a.heart
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    # A slightly squared ellipse: the left ventricle makes the lower-left border fuller.
    r = 1.0 + 0.05 * np.cos(2 * t) - 0.04 * np.cos(t)
    ex, ey = ha * r * np.cos(t), hb * r * np.sin(t)
    c, s = np.cos(tilt), np.sin(tilt)
    px, py = x + c * ex - s * ey, y + s * ex + c * ey
    # The heart rests on the diaphragm: stretch its lower half down into the abdomen so that no
    # sliver of lung is left between them.
    py = py + 0.1 * _smoothstep((py - y) / hb)
    return np.stack([px, py], axis=1)


def _mediastinum_outline(a: _Anatomy) -> np.ndarray:
    m, top, hx, hy = a.mediastinum, a.apex, a.heart[0], a.heart[1]
    knob = top + 0.15
    ctrl = [
        (-0.8 * m, -0.7),
        (-0.85 * m, top + 0.05),
        (-m, top + 0.15),
        (-m - 0.006, hy - 0.12),
        (-m - 0.012, hy),
        (-m, hy + 0.15),
        (hx, hy + 0.2),
        (m + 0.02, hy),
        (m + 0.03, knob + 0.1),  # pulmonary trunk
        (m + 0.012, knob + 0.065),
        (m + 0.04, knob),  # aortic knob
        (m + 0.035, knob - 0.035),
        (m + 0.004, knob - 0.07),
        (0.85 * m, top + 0.05),
        (0.8 * m, -0.7),
    ]
    return _catmull_rom(np.array(ctrl), 10)


# --------------------------------------------------------------------------- geometry (masks)


@dataclass(frozen=True)
class _Geometry:
    outlines: list[np.ndarray]  # per side, full-size pixels
    fields: list[np.ndarray]  # per side, uint8 lung field (outline minus mediastinum/heart)
    centres: list[np.ndarray]  # per side, pixel centre towards which the lung collapses


def _geometry(a: _Anatomy, frame: _Frame) -> _Geometry:
    shape = (frame.size, frame.size)
    outlines = [frame.px(_lung_outline(a, k)) for k in (0, 1)]
    sil = _fill(shape, [frame.px(_heart_outline(a)), frame.px(_mediastinum_outline(a))])
    fields = [cv2.bitwise_and(_fill(shape, [o]), cv2.bitwise_not(sil)) for o in outlines]
    centres = [
        frame.px(np.array([[_SIDES[k] * 0.25 * a.width, a.apex + 0.5 * (a.dome[k] - a.apex)]]))[0]
        for k in (0, 1)
    ]
    return _Geometry(outlines, fields, centres)


def _collapse(outline: np.ndarray, centre: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Outline pulled towards `centre` by `width` pixels per vertex (the collapsed lung)."""
    d = outline - centre
    r = np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
    return outline - np.minimum(width[:, None], 0.6 * r) * d / r


def _bump(outline, centre, theta0, half_width, depth) -> np.ndarray:
    """Per-vertex depth of a peripheral band centred on direction theta0 (radians, image axes):
    a smooth bell, so the band tapers into the chest wall at both ends like a real crescent."""
    d = outline - centre
    theta = np.arctan2(d[:, 1], d[:, 0])
    u = np.angle(np.exp(1j * (theta - theta0))) / half_width
    return depth * np.clip(1.0 - u**2, 0.0, 1.0) ** 2


def _peripheral_direction(side: int, delta: float) -> float:
    """Angle (image axes) `delta` radians from straight up towards the lateral chest wall."""
    return float(np.arctan2(-np.cos(delta), _SIDES[side] * np.sin(delta)))


# ------------------------------------------------------------------------------- pneumothorax


@dataclass(frozen=True)
class _Pneumothorax:
    masks: list[np.ndarray]  # bool, one per region
    lines: list[np.ndarray]  # visceral pleural line polylines (pixels)


def _pneumothorax(rng: np.random.Generator, geo: _Geometry, size: int, n: int) -> _Pneumothorax:
    for _ in range(50):
        if n == 2 and rng.random() < 0.5:
            plan = [(0, _ptx_bumps(rng, size, 1)), (1, _ptx_bumps(rng, size, 1))]
        else:
            plan = [(int(rng.integers(2)), _ptx_bumps(rng, size, n))]
        masks, lines = [], []
        for side, bumps in plan:
            found = _ptx_regions(geo, side, bumps, len(bumps))
            if found is None:
                break
            masks += found[0]
            lines += found[1]
        else:
            return _Pneumothorax(masks, lines)
    raise RuntimeError("could not place the pneumothorax")  # not seen in practice


def _ptx_bumps(rng: np.random.Generator, size: int, n: int) -> list[tuple[float, float, float]]:
    """(delta from apical, angular half-width, depth in pixels) of each region in one lung."""
    bumps = []
    delta = rng.uniform(-0.15, 0.5) if n == 2 else abs(rng.normal(0.45, 0.55))
    for k in range(n):
        t = rng.random()
        # Log-uniform depth from 1.2% to 25% of the image: region areas then match the real SIIM
        # positives (at 1024 a median of ~8,800 px) up to what the lung's shape allows.
        depth = max(2.0, size * np.exp(np.log(0.012) + t * np.log(0.25 / 0.012)))
        half = rng.uniform(0.25, 0.45) + 0.55 * t
        if n == 2:
            half = min(half, 0.55)
            if k == 1:
                delta += half + rng.uniform(0.25, 0.5)
        bumps.append((min(delta, 2.1), half, depth))
        delta += half
    return bumps


def _ptx_regions(geo: _Geometry, side: int, bumps, n: int):
    outline, centre = geo.outlines[side], geo.centres[side]
    depths = [_bump(outline, centre, _peripheral_direction(side, d), h, w) for d, h, w in bumps]
    collapsed = _collapse(outline, centre, np.sum(depths, axis=0))
    region = cv2.bitwise_and(
        geo.fields[side], cv2.bitwise_not(_fill(geo.fields[side].shape, [collapsed]))
    )
    x, y, w, h = cv2.boundingRect(region)  # label only the crop that holds the region: faster
    count, crop, stats, _ = cv2.connectedComponentsWithStats(
        region[y : y + h, x : x + w], connectivity=8
    )
    labels = np.zeros(region.shape, np.int32)
    labels[y : y + h, x : x + w] = crop
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1] + 1
    if count - 1 < n or areas[order[n - 1] - 1] < 4:
        return None
    if count - 1 > n and areas[order[n - 1] - 1] < 3 * areas[order[n] - 1]:
        return None  # a stray fragment rivals a region
    masks = [labels == k for k in order[:n]]
    lines = []
    for w in depths:
        start = int(np.argmin(w))  # roll so that the band does not wrap around index 0
        w, pts = np.roll(w, -start), np.roll(collapsed, -start, axis=0)
        lines.append(pts[w > 0.25])
    return masks, lines


# ----------------------------------------------------------------------------- density layers


@dataclass
class _Layers:
    """What findings add to: smooth lo-res layers and full-size canvases."""

    base: np.ndarray  # lo: soft tissue, bone, mediastinum, pleural findings (not masked by lung)
    air: np.ndarray  # lo: lung darkening amplitude (multiplied by the lung field at full size)
    paren: np.ndarray  # lo: lung parenchyma opacities (hidden in a pneumothorax)
    lesions: np.ndarray  # full uint8: fine parenchymal opacities (nodules, lines)
    fine: np.ndarray | None = None  # full float: fibrosis network
    veil: np.ndarray | None = None  # lo: how much of the parenchyma shows through (effusion)
    bone_vis: np.ndarray | None = None  # lo: bone contrast (low over mediastinum and abdomen)


def _body(a: _Anatomy, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Soft tissue: neck, sloping shoulders, chest wall, abdomen; brightness ~ thickness."""
    w = a.width
    t = np.clip((Y - a.apex + 0.24) / 0.22, 0, 1)
    shoulders = a.neck + (w + a.shoulder - a.neck) * (1 - (1 - t) ** 1.6)  # trapezius, deltoid
    chest = w + 0.045 + 0.03 * _smoothstep((Y - a.dome[0]) / 0.3)
    below = _smoothstep((Y - a.apex - 0.02) / 0.12)  # under the axilla: the chest wall
    hw = shoulders * (1 - below) + chest * below
    thick = np.clip(1.0 - (X / hw) ** 2, 0.0, 1.0) ** 0.7
    humerus = 0.0
    if a.arms:  # arms by the side, with a dark gap below the axilla
        u = (np.abs(X) - w - 0.16) / 0.065
        arm = np.clip(1.0 - u**2, 0.0, 1.0) * _smoothstep((Y - a.apex + 0.1) / 0.05)
        thick = np.maximum(thick, 0.7 * arm)
        humerus = 0.05 * _smoothstep((0.3 - np.abs(u)) / 0.1) * (arm > 0)
    tissue = 0.1 * (thick > 0) + 0.32 * thick
    belly = _smoothstep((Y - a.dome[0] - 0.02) / 0.08) * thick  # abdomen below the domes
    return (tissue + 0.06 * belly + humerus).astype(np.float32)


def _skeleton_lo(a: _Anatomy, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Spine (faint behind the mediastinum) and humeral heads: smooth enough for the lo grid."""
    ax = np.abs(X)
    band = _smoothstep((0.032 - ax) / 0.014)
    period = a.rib_gap * 1.05
    phase = np.mod(Y - a.rib_top, period) / period
    endplates = np.exp(-(((phase - 0.5) / 0.08) ** 2))
    pedicles = np.exp(-(((ax - 0.02) / 0.006) ** 2) - (((phase - 0.25) / 0.12) ** 2))
    spine = band * (0.025 + 0.015 * endplates) + 0.02 * pedicles
    heads = np.zeros_like(X)
    for s in _SIDES:
        hx, hy = s * (a.width + a.shoulder - 0.055), a.apex - 0.03
        d = np.hypot(X - hx, Y - hy) / 0.055
        heads += 0.08 * np.sqrt(np.clip(1.0 - d**2, 0.0, 1.0))
    return (spine + heads).astype(np.float32)


def _base_layers(a: _Anatomy, frame: _Frame, X, Y, rng_tex: np.random.Generator) -> _Layers:
    lo = frame.lo
    px = frame.lo_scale()
    tissue = _body(a, X, Y)
    base = tissue + _skeleton_lo(a, X, Y)
    heart = _fill((lo, lo), [frame.lo_px(_heart_outline(a))]).astype(np.float32) / 255
    sil = np.maximum(heart, _fill((lo, lo), [frame.lo_px(_mediastinum_outline(a))]) / 255)
    above = 1 - _smoothstep((Y - a.dome[0]) / 0.05)  # below the domes it is all abdomen
    sil = _blur(sil.astype(np.float32), 0.004 * px) * above
    base += 0.07 * sil
    # Trachea and main bronchi: an air column in the upper mediastinum.
    carina = a.apex + 0.19
    trachea = _smoothstep((0.014 - np.abs(X - 0.004)) / 0.005) * _smoothstep((carina - Y) / 0.02)
    base -= 0.07 * trachea
    if a.breasts:
        for s in _SIDES:
            bx, by = s * 0.6 * a.width, a.dome[0] - 0.03
            r = ((X - bx) / (0.3 * a.width)) ** 2 + ((Y - by) / 0.13) ** 2
            base += a.breasts * np.sqrt(np.clip(1 - r, 0, 1)) * _smoothstep((Y - by + 0.13) / 0.13)
    if a.bubble:
        bx, by = 0.42 * a.width, a.dome[1] + 0.05
        r = ((X - bx) / 0.06) ** 2 + ((Y - by) / 0.035) ** 2
        base -= 0.1 * _smoothstep((1 - r) / 0.3) * (by + 0.01 > Y)
    base = _blur(base, 0.6)  # anti-alias the body outline before upsampling
    # Aerated lung replaces a fraction of the tissue in the beam; less at the apices (thin, under
    # the shoulder girdle) and towards the bases (domes, breasts behind).
    air = a.air * tissue * (1 + 0.06 * _smooth_noise(rng_tex, lo, 5))
    air *= 1 - 0.2 * (1 - _smoothstep((Y - a.apex) / 0.1))
    air *= 1 - 0.15 * _smoothstep((Y - a.dome[0] + 0.15) / 0.2)
    # Parenchyma: hila plus a fine mottled texture that a pneumothorax lacks.
    paren = 0.018 * _blur(rng_tex.standard_normal((lo, lo)).astype(np.float32), 0.6)
    paren += 0.015 * _blur(rng_tex.standard_normal((lo, lo)).astype(np.float32), 2.0)
    for side in (0, 1):
        h = _hilum(a, side)
        paren += 0.05 * np.exp(-(((X - h[0]) / 0.035) ** 2) - ((Y - h[1]) / 0.06) ** 2)
    lesions = np.zeros((frame.size, frame.size), np.uint8)
    # Stands in for the scatter and display compression that hide bone behind thick tissue.
    bone_vis = 1 - 0.8 * sil - 0.4 * (1 - above)
    return _Layers(base, air.astype(np.float32), paren, lesions, bone_vis=bone_vis)


# ----------------------------------------------------------------------------- fine structures


def _width_px(frame: _Frame, w: float) -> float:
    return w * frame.scale()


def _vessel_branches(rng: np.random.Generator, hilum: np.ndarray, s: float):
    """Bifurcating tree: per generation, (polylines (n, 4, 2), width) in the patient frame."""
    n = int(rng.integers(5, 8))
    phi = np.linspace(-1.7, 1.6, n) + rng.normal(0.0, 0.12, n)  # from up, via lateral, to down
    # Lobar arteries leave along the hilum (upper ones higher), not from a single point.
    start = hilum + np.stack([np.zeros(n), 0.03 * phi / 1.7], axis=1)
    start += rng.normal(0.0, 0.006, (n, 2))
    length = rng.uniform(0.04, 0.055, n) * (1 + 0.3 * np.abs(np.sin(phi)))
    width = 0.013 * (1 + 0.15 * np.sin(phi))  # upright: lower-zone vessels are larger
    out = []
    for _ in range(8):
        m = len(phi)
        turns = phi[:, None] + rng.normal(0.0, 0.15, (m, 3)).cumsum(axis=1)  # gently wavy
        steps = np.stack([s * np.cos(turns), np.sin(turns)], axis=2) * (length[:, None, None] / 3)
        pts = np.concatenate([start[:, None], start[:, None] + steps.cumsum(axis=1)], axis=1)
        out.append((pts, float(width.mean())))
        spread, bias = rng.uniform(0.25, 0.55, m), rng.uniform(0.3, 0.7, m)
        phi = np.concatenate([turns[:, -1] - spread * bias, turns[:, -1] + spread * (1 - bias)])
        phi = np.clip(phi, -2.3, 2.3)
        start = np.concatenate([pts[:, -1], pts[:, -1]])
        length = np.concatenate([length, length]) * rng.uniform(0.72, 0.9, 2 * m)
        width = np.concatenate([width, width]) * 0.72
    return out


def _vessels(rng: np.random.Generator, a: _Anatomy, frame: _Frame) -> np.ndarray:
    """Pulmonary vessels radiating from each hilum, thinner and fainter at each generation."""
    canvas = np.zeros((frame.size, frame.size), np.uint8)
    trees = [_vessel_branches(rng, _hilum(a, side), _SIDES[side]) for side in (0, 1)]
    top = _width_px(frame, 0.013)
    for level in reversed(range(len(trees[0]))):  # thin first, so the trunks stay on top
        for tree in trees:
            pts, w = tree[level]
            w_px = _width_px(frame, w)
            prune = a.vessel_prune if level > 2 else 1.0
            gain = (0.2 + 0.8 * w_px / top) * min(1.0, w_px) * prune
            lines = list(_fixed(frame.px(pts.reshape(-1, 2))).reshape(pts.shape))
            thick = max(1, round(w_px))
            cv2.polylines(canvas, lines, False, int(255 * gain), thick, cv2.LINE_AA, _SHIFT)
    return _blur(canvas, max(0.5, frame.size / 1300))  # vessels are round, not flat bands


def _rib_curves(a: _Anatomy, side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(posterior, anterior) centre lines of each rib: an elliptical arc from the spine that
    slopes down to the lateral chest wall and comes back, lower, towards the sternum."""
    s, w = _SIDES[side], a.width
    knots = np.array([a.apex - 0.05, a.apex + 0.03, a.apex + 0.1, a.apex + 0.2, a.apex + 0.3])
    reach = np.array([0.35, 0.62, 0.82, 0.95, 1.0]) * w
    ribs = []
    for i in range(10):
        y_top = a.rib_top + a.rib_gap * i * (1 + 0.03 * i) + a.rib_jitter[side, i]
        drop = a.rib_drop * (0.07 + 0.008 * i)
        lat = float(np.interp(y_top + drop, knots, reach)) + 0.012
        cx, ax = s * 0.02, lat - 0.02
        phi = np.linspace(-np.pi / 2, np.deg2rad(8), 24)
        post = np.stack([cx + s * ax * np.cos(phi), y_top + drop + drop * np.sin(phi)], axis=1)
        # Anterior rib: from the lateral wall down and medially, ending at the cartilage.
        p0 = post[-1]
        p2 = np.array([s * 0.5 * lat, p0[1] + 0.35 * lat * np.tan(np.deg2rad(30 + 1.5 * i))])
        p1 = np.array([s * 0.8 * lat, p0[1] + 0.06])
        t = np.linspace(0.2, 1, 14)[:, None]  # the turn at the chest wall shows little
        ant = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2
        ribs.append((post, ant))
    return ribs


def _clavicle(a: _Anatomy, side: int) -> np.ndarray:
    s, top = _SIDES[side], a.apex
    ctrl = np.array(
        [
            (0.045, top + 0.06),
            (0.12, top + 0.055),
            (0.21, top + 0.04),
            (0.29, top + 0.02),
            (a.width + a.shoulder * 0.3, top - 0.01),
        ]
    )
    ctrl[:, 0] *= s
    return _catmull_rom(ctrl, 8, closed=False)


def _draw_bone(canvas, pts_px, width_px, band, cortex, cortex_px) -> None:
    # Plain (not antialiased) lines: much faster when thick, and the canvas is blurred anyway.
    _polyline(canvas, pts_px, band, round(width_px), line=cv2.LINE_8)
    half = max(0.5, width_px / 2 - cortex_px / 2)
    for sign in (-1, 1):
        _polyline(canvas, _offset(pts_px, sign * half), cortex, round(cortex_px), line=cv2.LINE_8)


def _bones(a: _Anatomy, frame: _Frame) -> np.ndarray:
    shape = (frame.size, frame.size)
    post, ant = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    cortex = max(1.0, _width_px(frame, 0.0025))
    rib_w = _width_px(frame, a.rib_width)
    for side in (0, 1):
        for i, (p, q) in enumerate(_rib_curves(a, side)):
            w = rib_w * (0.8 + 0.03 * i)
            _draw_bone(post, frame.px(p), w, 175, 215, cortex)
            _draw_bone(ant, frame.px(q), 0.75 * w, 190, 210, cortex)
        _draw_bone(post, frame.px(_clavicle(a, side)), _width_px(frame, 0.024), 190, 255, cortex)
    sigma = max(0.5, frame.size / 800)
    bone = _blur(post, sigma).astype(np.float32) * (0.045 * a.bone / 255)
    return bone + _blur(ant, sigma).astype(np.float32) * (0.018 * a.bone / 255)


# ------------------------------------------------------------------------------------ findings


@dataclass(frozen=True)
class _Scene:
    a: _Anatomy
    frame: _Frame
    geo: _Geometry
    X: np.ndarray  # lo-res patient-frame coordinates
    Y: np.ndarray
    lungs_lo: list[np.ndarray]  # per side, uint8 lung outline fill on the lo grid
    fields_lo: list[np.ndarray]  # per side, uint8 lung field on the lo grid
    sides: dict[str, int]  # side picked by a finding that also changed the anatomy

    def soft_field(self, side: int | None = None) -> np.ndarray:
        sides = (0, 1) if side is None else (side,)
        field = sum(self.fields_lo[k].astype(np.float32) for k in sides) / 255
        return _blur(field, 0.8)

    def lo_scale(self) -> float:
        return self.frame.lo_scale()


def _shape_findings(a: _Anatomy, found: dict[str, np.random.Generator]):
    """Findings that change the anatomy itself (heart size, lung volume, diaphragm)."""
    sides: dict[str, int] = {}
    if "Cardiomegaly" in found:
        k = found["Cardiomegaly"].uniform(1.28, 1.45)
        x, y, ha, hb, tilt = a.heart
        a = replace(a, heart=(x + 0.03 * (k - 1), y + 0.4 * hb * (k - 1), ha * k, hb * k, tilt))
    if "Emphysema" in found:
        rng = found["Emphysema"]
        low = rng.uniform(0.04, 0.07)
        x, y, ha, hb, tilt = a.heart
        a = replace(
            a,
            dome=(a.dome[0] + low, a.dome[1] + low),
            cp_drop=(a.cp_drop[0] * 0.5, a.cp_drop[1] * 0.5),  # flattened domes
            lateral=(a.lateral[0] + 0.03, a.lateral[1] + 0.03),
            heart=(x - 0.01, y + low, ha * 0.82, hb * 0.95, tilt + 0.25),  # narrow, vertical
            air=a.air * rng.uniform(1.15, 1.25),
            vessel_prune=0.35,
            rib_drop=a.rib_drop * 0.75,
            rib_gap=a.rib_gap * 1.08,
        )
    if "Atelectasis" in found:
        rng = found["Atelectasis"]
        sides["Atelectasis"] = side = int(rng.integers(2))
        dome = list(a.dome)
        dome[side] -= rng.uniform(0.04, 0.07)  # raised hemidiaphragm (volume loss)
        a = replace(a, dome=(dome[0], dome[1]))
    if "Fibrosis" in found:
        a = replace(a, lung_volume=found["Fibrosis"].uniform(0.9, 0.95))
    return a, sides


def _pick_point(rng, sc: _Scene, side: int, margin: float, weight=None) -> np.ndarray:
    """A random patient-frame point of a lung field at least `margin` from its edge."""
    dist = cv2.distanceTransform(sc.fields_lo[side], cv2.DIST_L2, 3)
    ok = dist >= min(margin * sc.lo_scale(), 0.6 * float(dist.max()))
    p = ok.ravel().astype(np.float64)
    if weight is not None:
        p = p * (weight.ravel() + 1e-3)
    idx = rng.choice(p.size, p=p / p.sum())
    return np.array([sc.X.ravel()[idx], sc.Y.ravel()[idx]])


def _lobulated(centre: np.ndarray, r: float, rng, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rr = r * (
        1 + sum(rng.uniform(0, 0.06) * np.cos(k * t + rng.uniform(0, 6.3)) for k in (2, 3, 5))
    )
    return centre + np.stack([rr * np.cos(t), rr * np.sin(t)], axis=1)


def _atelectasis(rng, sc: _Scene, layers: _Layers) -> None:
    a, frame = sc.a, sc.frame
    side = sc.sides["Atelectasis"]
    s = _SIDES[side]
    if rng.random() < 0.6:  # plate-like band above the raised dome
        y = a.dome[side] - rng.uniform(0.04, 0.1)
        x0, x1 = s * a.width * rng.uniform(0.25, 0.4), s * a.width * rng.uniform(0.7, 0.85)
        mid = (0.5 * (x0 + x1), y + rng.uniform(-0.015, 0.015))
        band = _catmull_rom(np.array([(x0, y + 0.01), mid, (x1, y - 0.01)]), 12, closed=False)
        _polyline(layers.lesions, frame.px(band), 170, round(_width_px(frame, 0.012)))
    else:  # upper lobe collapse: a wedge between the hilum and the upper mediastinum
        h = _hilum(a, side)
        tri = np.array(
            [h, (s * (a.mediastinum + 0.005), a.apex + 0.04), (s * 0.6 * a.width, h[1] - 0.08)]
        )
        wedge = _fill((frame.lo, frame.lo), [frame.lo_px(tri)]).astype(np.float32) / 255
        layers.paren += 0.18 * _blur(wedge, 0.01 * sc.lo_scale())


def _effusion(rng, sc: _Scene, layers: _Layers) -> None:
    """Fluid filling the costophrenic angle, its meniscus rising along the lateral wall."""
    a, side = sc.a, int(rng.integers(2))
    s = _SIDES[side]
    cp = a.dome[side] + a.cp_drop[side]
    height, rise = rng.uniform(0.05, 0.15), rng.uniform(0.5, 1.0)
    u = np.clip((s * sc.X - 0.1) / (a.lateral[side] * a.width - 0.1), 0, 1)
    level = cp - height * (1 + rise * u**1.5)
    fluid = np.clip((sc.Y - level) / 0.035, 0, 1) ** 0.7 * (s * sc.X > 0)
    layers.air *= 1 - 0.95 * fluid
    layers.base += 0.04 * fluid * _blur(sc.lungs_lo[side].astype(np.float32) / 255, 2)
    layers.veil = (1 - fluid) if layers.veil is None else layers.veil * (1 - fluid)


def _infiltration(rng, sc: _Scene, layers: _Layers) -> None:
    lo = sc.frame.lo
    side = int(rng.integers(3))  # 2: both lungs
    patch = 0.55 * _smooth_noise(rng, lo, 10) + 0.45 * _smooth_noise(rng, lo, 24)
    patch = np.clip(patch - 0.2, 0, 1.5)
    zone = 0.5 + 0.5 * _smoothstep((sc.Y - sc.a.apex) / 0.3)
    field = sc.soft_field(None if side == 2 else side)
    layers.paren += rng.uniform(0.06, 0.1) * patch * zone * field


def _mass(rng, sc: _Scene, layers: _Layers) -> None:
    side, r = int(rng.integers(2)), rng.uniform(0.035, 0.065)
    centre = _pick_point(rng, sc, side, 0.8 * r)
    lo = sc.frame.lo
    disk = _fill((lo, lo), [sc.frame.lo_px(_lobulated(centre, r, rng))]).astype(np.float32) / 255
    layers.paren += rng.uniform(0.2, 0.28) * _blur(disk, max(0.6, 0.12 * r * sc.lo_scale()))


def _nodule(rng, sc: _Scene, layers: _Layers) -> None:
    side, r = int(rng.integers(2)), rng.uniform(0.006, 0.013)
    centre = _pick_point(rng, sc, side, 2 * r)
    poly = sc.frame.px(_lobulated(centre, r, rng, 24))
    cv2.fillPoly(layers.lesions, [_fixed(poly)], int(rng.uniform(170, 240)), cv2.LINE_AA, _SHIFT)


def _pneumonia(rng, sc: _Scene, layers: _Layers) -> None:
    """Patchy, ill-defined airspace opacity, mostly in a lower or middle zone."""
    side = int(rng.integers(2))
    lower = _smoothstep((sc.Y - _hilum(sc.a, side)[1] + 0.02) / 0.1)
    c = _pick_point(rng, sc, side, 0.05, lower)
    r = rng.uniform(0.07, 0.12)
    blob = np.exp(-((sc.X - c[0]) ** 2 + (sc.Y - c[1]) ** 2) / r**2)
    patch = np.clip(1.7 * blob + 0.45 * _smooth_noise(rng, sc.frame.lo, 16) - 0.7, 0, 1)
    layers.paren += rng.uniform(0.14, 0.2) * _blur(patch, 1.0) * sc.soft_field(side)


def _consolidation(rng, sc: _Scene, layers: _Layers) -> None:
    """Dense, homogeneous lobar opacity with air bronchograms; a fissure bounds the RUL."""
    a, frame, lo = sc.a, sc.frame, sc.frame.lo
    lobe = int(rng.integers(4))  # RUL, RLL, LUL, LLL
    side, upper = lobe // 2, lobe % 2 == 0
    h = _hilum(a, side)
    fissure = h[1] - 0.005 + rng.uniform(-0.02, 0.02) * _SIDES[side] * sc.X / a.width
    if upper:
        sel = _smoothstep((fissure - sc.Y) / (0.006 if side == 0 else 0.05))
    else:
        sel = _smoothstep((sc.Y - fissure - 0.02) / 0.06)
    sel = sel * np.clip(0.85 + 0.3 * _smooth_noise(rng, lo, 6), 0, 1)
    bronchi = np.zeros((lo, lo), np.float32)
    for _ in range(int(rng.integers(3, 6))):
        ang = rng.uniform(-1.3, -0.3) if upper else rng.uniform(0.3, 1.3)
        pts = [h, h + rng.uniform(0.06, 0.12) * np.array([_SIDES[side] * np.cos(ang), np.sin(ang)])]
        _polyline(bronchi, frame.lo_px(np.array(pts)), 1.0, max(1, round(lo / 200)))
    dense = rng.uniform(0.16, 0.24) * sel * (1 - 0.5 * _blur(bronchi, 0.7))
    layers.paren += dense * sc.soft_field(side)


def _edema(rng, sc: _Scene, layers: _Layers) -> None:
    """Bilateral perihilar haze ("bat wings") and Kerley B lines at the lateral bases."""
    a, frame = sc.a, sc.frame
    haze = np.zeros_like(sc.X)
    for side in (0, 1):
        h = _hilum(a, side)
        haze += np.exp(-(((sc.X - h[0]) / 0.15) ** 2) - ((sc.Y - h[1] - 0.02) / 0.13) ** 2)
    haze *= np.clip(0.85 + 0.25 * _smooth_noise(rng, frame.lo, 8), 0, 2)
    layers.paren += rng.uniform(0.1, 0.15) * haze * sc.soft_field()
    thick = max(1, round(_width_px(frame, 0.0018)))
    for side in (0, 1):
        s, lat = _SIDES[side], a.lateral[side] * a.width
        for y in a.dome[side] + a.cp_drop[side] - rng.uniform(0.03, 0.16, int(rng.integers(5, 10))):
            x0 = s * (lat + 0.01)
            seg = np.array([(x0, y), (x0 - s * rng.uniform(0.015, 0.03), y)])
            _polyline(layers.lesions, frame.px(seg), 110, thick)


def _emphysema(rng, sc: _Scene, layers: _Layers) -> None:
    """Hyperlucent upper-zone bullae with hairline walls (the volume change is in the anatomy)."""
    frame = sc.frame
    for _ in range(int(rng.integers(0, 3))):
        side, r = int(rng.integers(2)), rng.uniform(0.03, 0.055)
        upper = 1 - _smoothstep((sc.Y - sc.a.apex - 0.15) / 0.1)
        c = _pick_point(rng, sc, side, r, upper)
        d = np.hypot(sc.X - c[0], sc.Y - c[1]) / r
        layers.air *= 1 + 0.1 * _smoothstep((1 - d) / 0.2)
        layers.paren *= 1 - 0.8 * _smoothstep((1 - d) / 0.2)
        ring = frame.px(_lobulated(c, r, rng, 40))
        _polyline(layers.lesions, ring, 50, 1, closed=True)


def _fibrosis(rng, sc: _Scene, layers: _Layers) -> None:
    """Reticular network (zero crossings of a random field), basal and peripheral."""
    size = sc.frame.size
    cells = max(8, round(60 * sc.frame.scale() / size))
    g = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    f = cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC)
    eps = 0.2 * max(1.0, 600 / size)  # keep the lines about a pixel wide at any size
    net = np.clip(1 - np.abs(f) / eps, 0, 1)
    lateral = np.abs(sc.X) / sc.a.width
    where = _smoothstep((sc.Y - sc.a.apex - 0.2) / 0.25) * (
        0.35 + 0.65 * _smoothstep(lateral - 0.4)
    )
    fine = net * _up(where.astype(np.float32) * rng.uniform(0.1, 0.14), size)
    layers.fine = fine if layers.fine is None else layers.fine + fine


def _pleural_thickening(rng, sc: _Scene, layers: _Layers) -> None:
    """Irregular bright rim along the apex (apical cap) or the lateral chest wall."""
    frame, lo = sc.frame, sc.frame.lo
    k = lo / frame.size
    apical = rng.random() < 0.5
    sides = (0, 1) if apical and rng.random() < 0.4 else (int(rng.integers(2)),)
    for side in sides:
        outline = (sc.geo.outlines[side] + 0.5) * k - 0.5
        centre = (sc.geo.centres[side] + 0.5) * k - 0.5
        delta = rng.uniform(-0.1, 0.3) if apical else rng.uniform(1.0, 1.7)
        depth = rng.uniform(0.02, 0.04) * sc.lo_scale()
        w = _bump(
            outline, centre, _peripheral_direction(side, delta), rng.uniform(0.45, 0.9), depth
        )
        t = np.linspace(0, 2 * np.pi, len(w))
        w *= 1 + 0.3 * np.sin(rng.integers(8, 16) * t + rng.uniform(0, 6.3))
        inner = _fill((lo, lo), [_collapse(outline, centre, w)])
        rim = cv2.bitwise_and(sc.lungs_lo[side], cv2.bitwise_not(inner)).astype(np.float32) / 255
        rim = _blur(rim, 0.7)
        layers.air *= 1 - 0.9 * rim
        layers.paren *= 1 - rim


def _hernia(rng, sc: _Scene, layers: _Layers) -> None:
    """Hiatal hernia: a round retrocardiac opacity with an air-fluid level."""
    a = sc.a
    r = rng.uniform(0.045, 0.07)
    c = (rng.uniform(0.0, 0.05), a.dome[1] - rng.uniform(0.08, 0.12))
    d = np.hypot(sc.X - c[0], sc.Y - c[1]) / r
    disk = _smoothstep((1 - d) / 0.08)
    level = c[1] - r * rng.uniform(0.0, 0.45)
    gas = disk * _smoothstep((level - sc.Y) * sc.lo_scale())
    layers.base += 0.06 * disk - 0.2 * gas


_RENDER = {
    "Atelectasis": _atelectasis,
    "Effusion": _effusion,
    "Infiltration": _infiltration,
    "Mass": _mass,
    "Nodule": _nodule,
    "Pneumonia": _pneumonia,
    "Consolidation": _consolidation,
    "Edema": _edema,
    "Emphysema": _emphysema,
    "Fibrosis": _fibrosis,
    "Pleural_Thickening": _pleural_thickening,
    "Hernia": _hernia,
}  # Cardiomegaly only changes the anatomy; Pneumothorax has its own stream


# ------------------------------------------------------------------------------------- compose


def _vessel_fade(sc: _Scene) -> np.ndarray:
    """1 inside the lungs, fading to 0 over the last ~2 % of the width before the outer edge."""
    lung = sc.lungs_lo[0] | sc.lungs_lo[1]
    dist = cv2.distanceTransform(lung, cv2.DIST_L2, 3)
    return _smoothstep(dist / (0.022 * sc.lo_scale())).astype(np.float32)


def _compose(sc, layers, vessels, bones, ptx, rng_noise) -> np.ndarray:
    a, size = sc.a, sc.frame.size
    # Drawn whether or not there is a pneumothorax, so the noise does not depend on it.
    ptx_dark, line_gain = rng_noise.uniform(0.08, 0.13), rng_noise.uniform(0.03, 0.05)
    field = cv2.bitwise_or(sc.geo.fields[0], sc.geo.fields[1])
    lung = _blur(field, max(0.5, size / 450)).astype(np.float32) * np.float32(1 / 255)
    d = _up(layers.base, size) - _up(layers.air, size) * lung
    paren = _up(layers.paren, size)
    paren += (
        vessels.astype(np.float32)
        * np.float32(0.07 * a.vessel_gain / 255)
        * _up(_vessel_fade(sc), size)
    )
    paren += layers.lesions.astype(np.float32) * np.float32(0.3 / 255)
    if layers.fine is not None:
        paren += layers.fine
    if layers.veil is not None:
        paren *= _up(layers.veil.astype(np.float32), size)
    paren *= lung
    if ptx is not None:
        inside = np.logical_or.reduce(ptx.masks)
        paren[inside] = 0  # no lung beyond the visceral pleura: no markings
        d[inside] -= ptx_dark
        canvas = np.zeros((size, size), np.uint8)
        thick = 2 * max(1, round(size / 512))
        for line in ptx.lines:
            _polyline(canvas, line, 255, thick)
        # Keep the line on the lung side of the region's inner border, and only along the region
        # (not where the band's tails, too thin to leave pixels, run along the chest wall).
        border = cv2.dilate(inside.astype(np.uint8), np.ones((thick + 1, thick + 1), np.uint8))
        canvas[inside | (field == 0) | (border == 0)] = 0
        d += canvas.astype(np.float32) * np.float32(line_gain / 255)
    d += paren
    d += bones * _up(layers.bone_vis.astype(np.float32), size)
    return _expose(d, rng_noise)


def _expose(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Quantum noise, then a per-image window/gamma look-up table to 8 bits."""
    size = d.shape[0]
    noise = _blur(rng.random((size, size), dtype=np.float32), 0.6)
    d += (noise - np.float32(0.5)) * np.float32(rng.uniform(0.04, 0.08))
    lo, hi, gamma = rng.uniform(-0.03, 0.05), rng.uniform(0.95, 1.1), rng.uniform(0.85, 1.2)
    shoulder = rng.uniform(1.2, 2.2)  # film-like roll-off: dense regions lose contrast
    top = 1.25
    x = np.clip((np.linspace(0.0, top, 4096) - lo) / (hi - lo), 0, 1) ** gamma
    x = (1 - np.exp(-shoulder * x)) / (1 - np.exp(-shoulder))
    lut = np.round(255 * x).astype(np.uint8)
    idx = np.clip(d * np.float32(4095 / top), 0, 4095).astype(np.uint16)
    return lut[idx]


def _check_findings(findings: Sequence[str]) -> set[str]:
    if isinstance(findings, str):
        findings = [findings]
    unknown = sorted(set(findings) - set(FINDINGS))
    if unknown:
        raise ValueError(f"unknown finding(s) {', '.join(map(repr, unknown))}; known: {FINDINGS}")
    return set(findings)


def render_chest(
    rng: np.random.Generator,
    size: int = 1024,
    *,
    pneumothorax_regions: int = 0,
    findings: Sequence[str] = (),
) -> RenderedChest:
    """Render one synthetic frontal chest radiograph.

    pneumothorax_regions in {0, 1, 2}; findings from FINDINGS (a 'Pneumothorax' finding with
    pneumothorax_regions == 0 means one region). Unknown finding names raise ValueError naming them.
    The same generator state gives the same image bit for bit.
    """
    names = _check_findings(findings)
    if pneumothorax_regions not in (0, 1, 2):
        raise ValueError(f"pneumothorax_regions must be 0, 1 or 2, got {pneumothorax_regions}")
    if size < 64:
        raise ValueError(f"size must be at least 64, got {size}")
    n_ptx = pneumothorax_regions or int("Pneumothorax" in names)
    seeds = rng.integers(0, 2**63, size=len(_STREAMS) + len(FINDINGS))
    streams = {
        k: np.random.default_rng(int(s)) for k, s in zip(_STREAMS + FINDINGS, seeds, strict=True)
    }

    frame = _sample_frame(streams["anatomy"], size)
    anatomy = _sample_anatomy(streams["anatomy"])
    found = {k: streams[k] for k in FINDINGS if k in names}
    anatomy, sides = _shape_findings(anatomy, found)
    geo = _geometry(anatomy, frame)
    ptx = _pneumothorax(streams["pneumothorax"], geo, size, n_ptx) if n_ptx else None

    X, Y = frame.lo_grid()
    lo = frame.lo
    sil_lo = _fill((lo, lo), [frame.lo_px(_heart_outline(anatomy))])
    sil_lo |= _fill((lo, lo), [frame.lo_px(_mediastinum_outline(anatomy))])
    lungs_lo = [_fill((lo, lo), [frame.lo_px(_lung_outline(anatomy, k))]) for k in (0, 1)]
    fields_lo = [cv2.bitwise_and(m, cv2.bitwise_not(sil_lo)) for m in lungs_lo]
    scene = _Scene(anatomy, frame, geo, X, Y, lungs_lo, fields_lo, sides)

    layers = _base_layers(anatomy, frame, X, Y, streams["texture"])
    for name, draw in _RENDER.items():
        if name in found:
            draw(found[name], scene, layers)
    vessels = _vessels(streams["vessels"], anatomy, frame)
    bones = _bones(anatomy, frame)
    image = _compose(scene, layers, vessels, bones, ptx, streams["noise"])
    field = (geo.fields[0] | geo.fields[1]) > 0
    return RenderedChest(image, ptx.masks if ptx else [], field)
