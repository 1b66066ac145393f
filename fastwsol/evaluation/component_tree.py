"""All CAM thresholds' boxes from one component-tree pass per image (numba, parallel over images).

The foreground sets F_k = {q > T_k} are nested (T_k nondecreasing in k), so a single union–find
sweep that adds pixels by decreasing q visits every threshold's components in turn; the
background sets {q ≤ T_k} are nested the other way and one ascending sweep visits every hole.
What OpenCV's ``findContours(RETR_TREE)`` reports is then read off the two trees:

* outer contour of an 8-connected foreground component C → bounding rect = bbox(C);
* hole contour of a 4-connected background component H not 4-connected to the image frame →
  it is traced through the foreground pixels 4-adjacent to H, so its bounding rect is
  bbox(H) grown by one pixel on every side;
* box from a rect (x, y, w, h): (x, y, min(x + w, W − 1), min(y + h, H − 1)).

Single-contour mode keeps the contour of largest ``cv2.contourArea``. A hole's polygon lies
inside its parent's outer polygon and a nested component's inside the hole, so the largest
area is always an outermost component's outer contour, where
area = #2×2 windows inside fill(C) + ½ #windows with exactly 3 of 4 pixels in fill(C)
(fill(C) = C plus everything it encloses). ``findContours`` lists outermost contours in
reverse raster order of their first pixel and a parent before its children, so among equal
areas the component whose first pixel comes last in raster order wins. Only the winner is
needed: each component's area is bounded between its own windows (or an earlier exact value:
fill(C) only grows with C) and its bbox, and the O(bbox) flood fill that gives fill(C) runs
only for components whose bounds leave the choice open (~3 per 1,000 thresholds on the
benchmark's maps, instead of one per threshold for every component with a hole).
The tests check all of this against OpenCV image by image.

Per component the sweep also keeps its Euler number (Gray's bit quads, updated from the
added pixel's 8-neighbourhood by table lookup): χ(C) = 1 − #holes(C). It tells when
fill(C) = C (then the area is a running sum), and which components hold holes. The hole
sweep runs only up to the last threshold where a hole box could still add a hit, and scores
holes only at thresholds where one could; two necessary conditions for a hole H of C to
give a hit on GT box g at δ, both exact (after float rounding too):

* reach: the hole box lies inside C's box, so IoU ≤ |box(C) ∩ g| / |g| must be ≥ δ;
* size: IoU(B, g) ≥ δ needs w_B + h_B ≥ a least sum fixed by g and δ
  (:func:`_hole_sum_bounds`), and C's crack length (the number of 4-adjacent pairs of a
  pixel of C and one not in C, kept per component like χ) bounds w_H + h_H: in every column
  that H spans, H's topmost and bottommost pixels border C (a 4-connected hole's outer
  boundary is one 8-connected ring of C), and so do its leftmost and rightmost pixels in
  every row, so H alone has ≥ 2(w_H + h_H) crack edges of C, each other hole ≥ 4, and C's
  outer boundary ≥ 2(w_C + h_C) more (the extreme pixels of C per column and row, which face
  no hole); the hole box is w_H + 3 wide and h_H + 3 tall.

At low thresholds, where a component spanning the image encloses many small noise dips,
the reach condition alone always held; the size condition rules most of them out.

Why numba: the sweeps are branchy scalar loops over pixels in value order (nothing for
torch/Triton to vectorise, no GPU here); numba compiles them ahead of use with
``cache=True`` (first call in a fresh environment ~30-40 s, then ~1 s to load),
``nogil`` and ``prange`` over images, without a C++ build step.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

__all__ = ["correct_at_thresholds_component_tree", "quantize_scoremaps", "normalize_and_quantize"]

_NOGIL = dict(cache=True, nogil=True)

# Index arrays through an unsigned type: numba then skips its negative-index wraparound
# (a shift, an and and a spilled shape load per access in the pixel loops). Every index
# below is a valid nonnegative position.
_U = np.uint64


@nb.njit(inline="always", **_NOGIL)
def _find(parent, x):
    while parent[_U(x)] != x:  # path halving
        parent[_U(x)] = parent[_U(parent[_U(x)])]
        x = parent[_U(x)]
    return x


@nb.njit(inline="always", **_NOGIL)
def _link(parent, size, box, a, b):
    """Union of roots a ← b: b's size and box go into a."""
    parent[_U(b)] = a
    size[_U(a)] += size[_U(b)]
    box[_U(a), 0] = min(box[_U(a), 0], box[_U(b), 0])
    box[_U(a), 1] = min(box[_U(a), 1], box[_U(b), 1])
    box[_U(a), 2] = max(box[_U(a), 2], box[_U(b), 2])
    box[_U(a), 3] = max(box[_U(a), 3], box[_U(b), 3])


@nb.njit(inline="always", **_NOGIL)
def _hit_mask(x0, y0, x1, y1, gt, iou_thresholds):
    """Bit j set iff max_g IoU(box, gt_g) ≥ iou_thresholds[j] (float64, as the reference)."""
    best = 0.0
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    for g in range(gt.shape[0]):
        iw = min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1
        ih = min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1
        inter = max(0, iw) * max(0, ih)
        union = area + (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1) - inter
        iou = inter / union if union > 0 else 0.0
        if iou > best:
            best = iou
    mask = 0
    for j in range(iou_thresholds.shape[0]):
        if best >= iou_thresholds[j]:
            mask |= 1 << j
    return mask


@nb.njit(**_NOGIL)
def _hole_sum_bounds(gt, iou_thresholds):
    """need[g, j]: a lower bound of w + h (inclusive width and height) of any box B with
    IoU(B, g) ≥ δ_j after float rounding. IoU ≤ w/w_g if w ≤ w_g (|B ∩ g| ≤ w·h_g, union ≥ |g|)
    and IoU ≤ 1 ≤ w/w_g otherwise, so w ≥ δ·w_g; likewise h ≥ δ·h_g; and IoU ≤ |B|/|g| gives
    w·h ≥ δ·|g| = P. The least w + h under these is 2√P if √P ≥ δ·max(w_g, h_g), else
    δ·max(w_g, h_g) + min(w_g, h_g). The factor 1 − 1e-9 covers float rounding (an IoU that
    rounds up to δ, and this bound's own rounding) with a wide margin."""
    need = np.empty((gt.shape[0], iou_thresholds.shape[0]), np.float64)
    for g in range(gt.shape[0]):
        wg = gt[g, 2] - gt[g, 0] + 1
        hg = gt[g, 3] - gt[g, 1] + 1
        for j in range(iou_thresholds.shape[0]):
            d = iou_thresholds[j]
            root = np.sqrt(d * wg * hg)
            big = d * max(wg, hg)
            need[g, j] = (2 * root if root >= big else big + min(wg, hg)) * (1 - 1e-9)
    return need


@nb.njit(inline="always", **_NOGIL)
def _reach_mask(x0, y0, x1, y1, max_sum, gt, iou_thresholds, need_sum):
    """Bit j set iff a box B inside (x0, y0, x1, y1) with w_B + h_B ≤ max_sum could reach
    IoU ≥ δ_j with some GT box g: IoU(B, g) ≤ |B ∩ g| / |g| ≤ |box ∩ g| / |g| (exactly, and so
    after float rounding), and w_B + h_B ≥ need_sum[g, j] (:func:`_hole_sum_bounds`)."""
    mask = 0
    for g in range(gt.shape[0]):
        iw = min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1
        ih = min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1
        inter = max(0, iw) * max(0, ih)
        area = (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1)
        reach = inter / area if area > 0 else 0.0
        for j in range(iou_thresholds.shape[0]):
            if reach >= iou_thresholds[j] and max_sum >= need_sum[g, j]:
                mask |= 1 << j
    return mask


@nb.njit(**_NOGIL)
def _pixels_by_value(q, height, width, order):
    """Counting sort: ``order`` ← the pixels by value (raster order within a value), each
    coded as its index p into the image padded by a one-pixel frame | x << 32 | y << 48 (the
    sweeps read x, y from the code: sequential, not a table lookup); returns each value's
    start. Runs of equal values are common in smooth maps, so neither pass chains every
    pixel through one counter in memory: the counts go to four lanes (x mod 4), and the
    scatter keeps a run's next slot in a register."""
    counts = np.zeros(1024, np.int64)
    for y in range(height):
        row = y * width
        for x in range(width):
            counts[_U(q[_U(row + x)] * 4 + (x & 3))] += 1
    starts = np.empty(257, np.int64)
    fill = np.empty(256, np.int64)
    total = 0
    for v in range(256):
        starts[v] = total
        fill[v] = total
        total += counts[v * 4] + counts[v * 4 + 1] + counts[v * 4 + 2] + counts[v * 4 + 3]
    starts[256] = total
    pw = width + 2
    for y in range(height if width > 0 else 0):
        row = y * width
        run = _U(q[_U(row)])
        pos = fill[run]
        for x in range(width):
            v = _U(q[_U(row + x)])
            if v != run:
                fill[run] = pos
                run = v
                pos = fill[v]
            order[_U(pos)] = ((y + 1) * pw + x + 1) | (x << 32) | (y << 48)
            pos += 1
        fill[run] = pos
    return starts


@nb.njit(inline="always", **_NOGIL)
def _neighbourhood(added, p, pw):
    """8-bit pattern of present neighbours (NW, N, NE, W, E, SW, S, SE), branch-free."""
    above = p - pw
    below = p + pw
    return (
        added[_U(above - 1)] | (added[_U(above)] << 1) | (added[_U(above + 1)] << 2) | (added[_U(p - 1)] << 3)
        | (added[_U(p + 1)] << 4) | (added[_U(below - 1)] << 5) | (added[_U(below)] << 6)
        | (added[_U(below + 1)] << 7)
    )


@nb.njit(**_NOGIL)
def _neighbour_offsets(pw):
    """Index offsets of the 8 neighbours in a padded image pw wide, in _neighbourhood's order."""
    return np.array([-pw - 1, -pw, -pw + 1, -1, 1, pw - 1, pw, pw + 1])


@nb.njit(**_NOGIL)
def _add_mask(counts, mask, sign):
    for j in range(counts.shape[0]):
        if (mask >> j) & 1:
            counts[j] += sign


@nb.njit(**_NOGIL)
def _fill_area2(r, parent, added, box, padded_width, grid, stack):
    """2 × contourArea of C = component r's outer contour: flood the non-C pixels from a
    one-pixel frame around bbox(C) (4-connected); what is not reached is fill(C)."""
    bx0, by0, bx1, by1 = box[r, 0], box[r, 1], box[r, 2], box[r, 3]
    gw = bx1 - bx0 + 3
    gh = by1 - by0 + 3
    for gy in range(gh):
        for gx in range(gw):
            member = 0
            if 0 < gy < gh - 1 and 0 < gx < gw - 1:
                p = (by0 + gy) * padded_width + (bx0 + gx)  # padded coordinates
                if added[p] and _find(parent, p) == r:
                    member = 1
            grid[gy * gw + gx] = member
    grid[0] = 2
    stack[0] = 0
    top = 1
    while top > 0:
        top -= 1
        g = stack[top]
        gy = g // gw
        gx = g - gy * gw
        for d in range(4):
            ny = gy + (d == 0) - (d == 1)
            nx = gx + (d == 2) - (d == 3)
            if 0 <= ny < gh and 0 <= nx < gw:
                n = ny * gw + nx
                if grid[n] == 0:
                    grid[n] = 2
                    stack[top] = n
                    top += 1
    area2 = 0
    for gy in range(gh - 1):
        for gx in range(gw - 1):
            g = gy * gw + gx
            inside = (grid[g] != 2) + (grid[g + 1] != 2) + (grid[g + gw] != 2) + (grid[g + gw + 1] != 2)
            if inside == 4:
                area2 += 2
            elif inside == 3:
                area2 += 1
    return area2


def _euler_delta_table() -> np.ndarray:
    """4·Δχ when a pixel joins an 8-connected foreground, indexed by its 8-neighbourhood
    (bit i = neighbour i in NW, N, NE, W, E, SW, S, SE order). Gray's bit quads:
    4χ = n(Q1) − n(Q3) − 2·n(QD) over all 2×2 windows, and only the 4 windows holding the
    pixel change; χ = #components − #holes."""

    def quad(a, b, c, d):  # a b / c d
        s = a + b + c + d
        return {1: 1, 3: -1}.get(s, -2 if s == 2 and a == d else 0)

    table = np.zeros(256, np.int64)
    for bits in range(256):
        nw, n, ne, w, e, sw, s, se = ((bits >> i) & 1 for i in range(8))
        def windows(c):
            return quad(nw, n, w, c) + quad(n, ne, c, e) + quad(w, c, sw, s) + quad(c, e, s, se)
        table[bits] = windows(1) - windows(0)
    return table


def _area_delta_table() -> np.ndarray:
    """2·Δ(window area) when a pixel joins, indexed like :func:`_euler_delta_table`: a 2×2
    window with 4 foreground pixels counts 1, with 3 counts ½ (the polygon through pixel
    centres covers a triangle of it). Summed over a component C this is cv2.contourArea of
    C's outer contour whenever C has no hole."""

    def half_units(count):
        return 2 if count == 4 else 1 if count == 3 else 0

    table = np.zeros(256, np.int64)
    for bits in range(256):
        nw, n, ne, w, e, sw, s, se = ((bits >> i) & 1 for i in range(8))
        windows = ((nw, n, w), (n, ne, e), (w, sw, s), (e, s, se))
        table[bits] = sum(half_units(sum(win) + 1) - half_units(sum(win)) for win in windows)
    return table


_EULER_DELTA = _euler_delta_table()
# Δ crack length when a pixel joins: 4 new pairs with its non-foreground 4-neighbours (N, W,
# E, S are bits 1, 3, 4, 6), and the pairs it formed with its foreground 4-neighbours go.
_CRACK_DELTA = np.array([4 - 2 * sum((bits >> i) & 1 for i in (1, 3, 4, 6)) for bits in range(256)], np.int64)
_AREA2_DELTA = _area_delta_table()

# Neighbour i of a pixel, in the bit order of the sweeps' offset arrays.
_RING = ((-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1))


def _neighbour_groups(connectivity: int) -> np.ndarray:
    """For each 8-neighbourhood pattern (bit i = neighbour i present), one representative
    neighbour per group of present neighbours that are certainly already connected, so a
    sweep needs one find per group instead of one per neighbour. Row = [count, reps...].

    8-connectivity: present neighbours that are 8-adjacent to each other are one component.
    4-connectivity: only the 4-neighbours N, W, E, S count, and two of them are joined when
    the diagonal pixel between them is present (N–NE–E is a 4-path)."""
    table = np.zeros((256, 5), np.int64)
    for bits in range(256):
        present = [i for i in range(8) if (bits >> i) & 1]
        if connectivity == 4:
            members = [i for i in present if 0 in _RING[i]]
        else:
            members = present

        def joined(i, j):
            (xi, yi), (xj, yj) = _RING[i], _RING[j]
            if connectivity == 8:
                return max(abs(xi - xj), abs(yi - yj)) <= 1
            corner = _RING.index((xi + xj, yi + yj)) if abs(xi - xj) == 1 and abs(yi - yj) == 1 else -1
            return corner >= 0 and corner in present

        group = {i: i for i in members}

        def root(i):
            while group[i] != i:
                i = group[i]
            return i

        for i in members:
            for j in members:
                if i < j and joined(i, j):
                    group[root(j)] = root(i)
        reps = sorted({root(i) for i in members})
        table[bits, 0] = len(reps)
        table[bits, 1 : 1 + len(reps)] = reps
    return table


_GROUPS_8 = _neighbour_groups(8)
_GROUPS_4 = _neighbour_groups(4)


class _Workspace(NamedTuple):
    """Per-pixel arrays of the sweeps, over the image padded by a one-pixel frame; reused
    across images (entries are initialised when a pixel is added). Per-component entries
    are valid at roots.

    The sweeps unpack it once per image and hand its arrays to their helpers: numba counts a
    reference for every field read and every array an inlined helper receives, and drops the
    pair only when no call lies between (hence :func:`_hit_mask` and :func:`_reach_mask` are
    inlined too). Counts left in the per-threshold and per-pixel paths measured 5-20 % slower."""

    parent: np.ndarray  # union–find parent
    size: np.ndarray  # number of pixels
    added: np.ndarray  # 1 once the pixel is in the swept set
    box: np.ndarray  # x0, y0, x1, y1 (image coordinates)
    mask: np.ndarray  # hit bits of the root's box
    is_dirty: np.ndarray  # the root is on the dirty list
    dirty: np.ndarray  # roots to re-score at the next threshold
    potential: np.ndarray  # reach bits of a root with holes (_reach_mask)
    active: np.ndarray  # roots (single-contour)
    position: np.ndarray  # a root's index in active
    first: np.ndarray  # first pixel in raster order
    area_size: np.ndarray  # size when area2 was computed (−1: never)
    area2: np.ndarray  # cached 2·contourArea, or a lower bound of it
    euler4: np.ndarray  # 4χ(C) = 4·(1 − #holes of C)
    window_area2: np.ndarray  # 2·Σ window areas of C's own pixels
    grid: np.ndarray  # flood fill scratch
    stack: np.ndarray  # flood fill scratch
    crack: np.ndarray  # number of 4-adjacent pairs (pixel of C, pixel not in C)


@nb.njit(**_NOGIL)
def _workspace(height, width):
    total = (height + 2) * (width + 2)
    return _Workspace(
        np.empty(total, np.int32),
        np.empty(total, np.int32),
        np.zeros(total, np.uint8),
        np.empty((total, 4), np.int32),
        np.empty(total, np.int64),
        np.zeros(total, np.bool_),
        np.empty(total, np.int32),
        np.empty(total, np.int64),
        np.empty(height * width, np.int32),
        np.empty(total, np.int32),
        np.empty(total, np.int32),
        np.empty(total, np.int32),
        np.empty(total, np.int64),
        np.empty(total, np.int64),
        np.empty(total, np.int64),
        np.empty(total, np.int8),
        np.empty(total, np.int32),
        np.empty(total, np.int32),
    )


@nb.njit(inline="always", **_NOGIL)
def _mark_dirty(is_dirty, dirty, num_dirty, r):
    """Puts root r on the dirty list unless it is there; returns the list's new length."""
    if is_dirty[_U(r)]:
        return num_dirty
    is_dirty[_U(r)] = True
    dirty[_U(num_dirty)] = r
    return num_dirty + 1


@nb.njit(inline="always", **_NOGIL)
def _grow_box(box, a, x, y):
    """Grows root a's box to hold (x, y); returns whether it grew."""
    if x < box[_U(a), 0] or y < box[_U(a), 1] or x > box[_U(a), 2] or y > box[_U(a), 3]:
        box[_U(a), 0] = min(box[_U(a), 0], x)
        box[_U(a), 1] = min(box[_U(a), 1], y)
        box[_U(a), 2] = max(box[_U(a), 2], x)
        box[_U(a), 3] = max(box[_U(a), 3], y)
        return True
    return False


@nb.njit(inline="always", **_NOGIL)
def _new_root(parent, size, box, mask, p, x, y):
    """Pixel p at (x, y) alone as a component."""
    parent[_U(p)] = p
    size[_U(p)] = 1
    box[_U(p), 0] = x
    box[_U(p), 1] = y
    box[_U(p), 2] = x
    box[_U(p), 3] = y
    mask[_U(p)] = 0


@nb.njit(inline="always", **_NOGIL)
def _drop_active(active, position, num_active, r):
    """Removes root r from the list of active roots (the last one takes its place); returns
    the list's new length."""
    last = active[_U(num_active - 1)]
    active[_U(position[_U(r)])] = last
    position[_U(last)] = position[_U(r)]
    return num_active - 1


@nb.njit(inline="always", **_NOGIL)
def _add_pixels(
    order, starts, first_value, stop_value, step, pw, offsets,
    parent, size, added, box, mask, is_dirty, dirty,
    potential, active, position, first, area_size, area2, euler4, window_area2, crack,
    counts, potential_counts, num_dirty, num_active, foreground, multi_contour,
):
    """Adds the pixels of values first_value, first_value + step, … before stop_value, each
    value's in raster order (:func:`_pixels_by_value`), to the union–find forest; returns the
    new (num_dirty, num_active). A pixel joins its present neighbours' components (one find
    per group: :func:`_neighbour_groups`), the smaller merged into the larger; a root whose
    box, mask or holes may have changed goes on the dirty list.

    ``foreground``: 8-connected components that also keep their Euler number and crack
    length (multi-contour), or first pixel, areas and place among the active roots
    (single-contour); else 4-connected background components (size, box, mask). Each sweep
    inlines this with ``foreground`` a constant, and so compiles only its own branches."""
    groups = _GROUPS_8 if foreground else _GROUPS_4
    for v in range(first_value, stop_value, step):
        for i in range(starts[v], starts[v + 1]):
            code = order[_U(i)]
            p = code & 0xFFFFFFFF
            x = (code >> 32) & 0xFFFF
            y = code >> 48
            added[_U(p)] = 1
            bits = _neighbourhood(added, p, pw)
            a = -1
            for g in range(groups[bits, 0]):
                b = _find(parent, p + offsets[_U(groups[bits, 1 + g])])
                if a == -1:
                    a = b
                    continue
                if a == b:
                    continue
                if size[_U(a)] < size[_U(b)]:
                    a, b = b, a
                _link(parent, size, box, a, b)
                if foreground:
                    euler4[_U(a)] += euler4[_U(b)]
                    crack[_U(a)] += crack[_U(b)]
                if multi_contour:
                    _add_mask(counts, mask[_U(b)], -1)
                    mask[_U(b)] = 0
                    if foreground:
                        _add_mask(potential_counts, potential[_U(b)], -1)
                        potential[_U(b)] = 0
                else:
                    first[_U(a)] = min(first[_U(a)], first[_U(b)])
                    area2[_U(a)] = max(area2[_U(a)], area2[_U(b)])  # fill(A ∪ B) ⊇ fill(A), fill(B)
                    window_area2[_U(a)] += window_area2[_U(b)]
                    num_active = _drop_active(active, position, num_active, b)
                num_dirty = _mark_dirty(is_dirty, dirty, num_dirty, a)
            if a == -1:  # a new component
                _new_root(parent, size, box, mask, p, x, y)
                if foreground:
                    potential[_U(p)] = 0
                    area_size[_U(p)] = -1
                    area2[_U(p)] = 0  # a lower bound of 2·contourArea until computed
                    first[_U(p)] = p  # padded indices keep raster order
                    euler4[_U(p)] = _EULER_DELTA[bits]
                    crack[_U(p)] = 4
                    if not multi_contour:
                        window_area2[_U(p)] = _AREA2_DELTA[bits]
                        position[_U(p)] = num_active
                        active[_U(num_active)] = p
                        num_active += 1
                num_dirty = _mark_dirty(is_dirty, dirty, num_dirty, p)
                continue
            parent[_U(p)] = a
            size[_U(a)] += 1
            if foreground:
                euler4[_U(a)] += _EULER_DELTA[bits]
                if not multi_contour:
                    window_area2[_U(a)] += _AREA2_DELTA[bits]
                else:  # (crack is kept in multi-contour mode only)
                    crack[_U(a)] += _CRACK_DELTA[bits]
                    # holes opened or closed, or, with holes, the crack bound moved
                    if _EULER_DELTA[bits] != 0 or euler4[_U(a)] != 4:
                        num_dirty = _mark_dirty(is_dirty, dirty, num_dirty, a)
            if _grow_box(box, a, x, y):
                num_dirty = _mark_dirty(is_dirty, dirty, num_dirty, a)
    return num_dirty, num_active


@nb.njit(inline="always", **_NOGIL)
def _positive_bits(counts):
    """Bit j set iff counts[j] > 0."""
    bits = 0
    for j in range(counts.shape[0]):
        if counts[j] > 0:
            bits |= 1 << j
    return bits


@nb.njit(inline="always", **_NOGIL)
def _outer_hit_mask(box, r, height, width, gt, iou_thresholds):
    """Hit bits of the outer contour of the component rooted at r: its rect is bbox(C)."""
    return _hit_mask(
        box[r, 0], box[r, 1], min(box[r, 2] + 1, width - 1), min(box[r, 3] + 1, height - 1), gt, iou_thresholds
    )


@nb.njit(inline="always", **_NOGIL)
def _rescore_components(
    parent, box, mask, is_dirty, dirty, potential, euler4, crack, num_dirty, height, width, gt, iou_thresholds,
    need_sum, counts, potential_counts,
):
    """Multi-contour: replaces each dirty root's hit bits (its outer contour) and reach bits
    (whether a hole box of it could hit: :func:`_reach_mask` with the crack bound) in the
    counts and clears the dirty list; returns (bits some component hits, bits some hole
    could hit)."""
    for i in range(num_dirty):
        d = dirty[i]
        is_dirty[d] = False
        if parent[d] != d:
            continue
        _add_mask(counts, mask[d], -1)
        _add_mask(potential_counts, potential[d], -1)
        mask[d] = _outer_hit_mask(box, d, height, width, gt, iou_thresholds)
        potential[d] = 0
        if euler4[d] < 4:  # χ(C) = 1 − #holes(C)
            holes = 1 - euler4[d] // 4
            w = box[d, 2] - box[d, 0] + 1
            h = box[d, 3] - box[d, 1] + 1
            # w_H + h_H of any one hole ≤ crack/2 − (w + h) − 2·(holes − 1) (the crack
            # length is even); its box is 3 wider and 3 taller than H
            max_sum = crack[d] // 2 - w - h - 2 * (holes - 1) + 6
            x1, y1 = min(box[d, 2] + 1, width - 1), min(box[d, 3] + 1, height - 1)
            potential[d] = _reach_mask(box[d, 0], box[d, 1], x1, y1, max_sum, gt, iou_thresholds, need_sum)
        _add_mask(counts, mask[d], 1)
        _add_mask(potential_counts, potential[d], 1)
    return _positive_bits(counts), _positive_bits(potential_counts)


@nb.njit(inline="always", **_NOGIL)
def _largest_component(
    active, size, box, first, area_size, area2, euler4, window_area2, parent, added, grid, stack, num_active, pw
):
    """Single-contour: the active root whose outer contour has the largest cv2.contourArea,
    ties to the last first pixel in raster order (the module docstring). Only the winner is
    needed, not the areas: bound 2·contourArea of C between lower = max(own windows, an
    earlier exact value) — fill(C) only grows as C does — and upper = its bbox (exact when
    C has no hole or its fill is cached), lead with the best lower bound, and flood-fill
    (O(bbox)) only the components whose bounds leave the choice open."""
    best = -1
    best_area2 = -1  # the leader's lower bound; exact once best_exact
    for i in range(num_active):
        r = active[i]
        if euler4[r] == 4:  # no hole: fill(C) = C
            area2[r] = window_area2[r]
            area_size[r] = size[r]
        elif area_size[r] != size[r]:
            area2[r] = max(area2[r], window_area2[r])
        if area2[r] > best_area2 or (area2[r] == best_area2 and first[r] > first[best]):
            best = r
            best_area2 = area2[r]
    best_exact = area_size[best] == size[best]
    for i in range(num_active):
        r = active[i]
        if r == best:
            continue
        if area_size[r] == size[r]:
            upper2 = area2[r]
        else:
            upper2 = 2 * (box[r, 2] - box[r, 0]) * (box[r, 3] - box[r, 1])
        if upper2 < best_area2 or (upper2 == best_area2 and first[r] < first[best]):
            continue
        if not best_exact:
            best_area2 = _fill_area2(best, parent, added, box, pw, grid, stack)
            area2[best] = best_area2
            area_size[best] = size[best]
            best_exact = True
            if upper2 < best_area2 or (upper2 == best_area2 and first[r] < first[best]):
                continue
        if area_size[r] != size[r]:
            area2[r] = _fill_area2(r, parent, added, box, pw, grid, stack)
            area_size[r] = size[r]
        if area2[r] > best_area2 or (area2[r] == best_area2 and first[r] > first[best]):
            best = r
            best_area2 = area2[r]
    return best


@nb.njit(**_NOGIL)
def _foreground_sweep(order, starts, height, width, levels, gt, iou_thresholds, multi_contour, out, hole_reach, ws):
    """Descending sweep over 8-connected foreground components: ORs into out[k] the hit mask
    of every component's box (multi-contour) or of the largest one's (single-contour), and
    sets bit j of hole_reach[k] when some component with a hole could have a hole box
    matching at δ_j: its box reaches far enough into a GT box and its crack length leaves
    room for a hole box large enough (see the module docstring, :func:`_reach_mask`).

    Union–find runs on the image padded by a one-pixel frame that is never foreground, so
    neighbours need no bounds checks; bboxes are kept in image coordinates. A component is
    re-scored only when its box or its holes changed."""
    pw = width + 2
    (parent, size, added, box, mask, is_dirty, dirty, potential, active, position, first, area_size, area2,
     euler4, window_area2, grid, stack, crack) = ws
    added[:] = 0
    is_dirty[:] = False
    counts = np.zeros(iou_thresholds.shape[0], np.int64)
    potential_counts = np.zeros(iou_thresholds.shape[0], np.int64)
    offsets = _neighbour_offsets(pw)
    need_sum = _hole_sum_bounds(gt, iou_thresholds)
    empty_mask = _hit_mask(0, 0, 0, 0, gt, iou_thresholds)
    num_dirty = 0
    num_active = 0
    top = 256  # pixels with q >= top are in
    for k in range(levels.shape[0] - 1, -1, -1):
        num_dirty, num_active = _add_pixels(
            order, starts, top - 1, levels[k], -1, pw, offsets,
            parent, size, added, box, mask, is_dirty, dirty,
            potential, active, position, first, area_size, area2, euler4, window_area2, crack,
            counts, potential_counts, num_dirty, num_active, True, multi_contour,
        )
        top = min(top, levels[k] + 1)
        if starts[top] == starts[256]:  # no foreground
            out[k] |= empty_mask
        elif multi_contour:
            hits, reach = _rescore_components(
                parent, box, mask, is_dirty, dirty, potential, euler4, crack, num_dirty, height, width, gt,
                iou_thresholds, need_sum, counts, potential_counts,
            )
            out[k] |= hits
            hole_reach[k] = reach
            num_dirty = 0
        else:
            for i in range(num_dirty):
                is_dirty[dirty[i]] = False
            num_dirty = 0
            best = _largest_component(
                active, size, box, first, area_size, area2, euler4, window_area2, parent, added, grid, stack,
                num_active, pw,
            )
            out[k] |= _outer_hit_mask(box, best, height, width, gt, iou_thresholds)


@nb.njit(inline="always", **_NOGIL)
def _rescore_holes(
    parent, box, mask, is_dirty, dirty, num_dirty, outside, height, width, gt, iou_thresholds, least_sum, counts
):
    """Replaces each dirty hole's hit bits in the counts and clears the dirty list; returns
    the bits some hole hits. A hole is a root other than the frame's; its contour's rect is
    its bbox grown by one pixel."""
    for i in range(num_dirty):
        d = dirty[i]
        is_dirty[d] = False
        if parent[d] != d or d == outside:
            continue
        _add_mask(counts, mask[d], -1)
        mask[d] = 0
        if box[d, 2] - box[d, 0] + box[d, 3] - box[d, 1] + 8 >= least_sum:  # ≥ w + h of the box
            x1, y1 = min(box[d, 2] + 2, width - 1), min(box[d, 3] + 2, height - 1)
            mask[d] = _hit_mask(box[d, 0] - 1, box[d, 1] - 1, x1, y1, gt, iou_thresholds)
        _add_mask(counts, mask[d], 1)
    return _positive_bits(counts)


@nb.njit(**_NOGIL)
def _hole_sweep(order, starts, height, width, levels, gt, iou_thresholds, out, need, ws):
    """Ascending sweep over 4-connected background components up to the last threshold k
    with need[k] ≠ 0; holes are scored only at those thresholds. The padding frame starts as
    one background component; whatever joins it is not a hole, the rest are holes."""
    last = -1
    for k in range(need.shape[0]):
        if need[k]:
            last = k
    # a hole box narrower + shorter than this matches no GT box at any δ (_hole_sum_bounds)
    least_sum = _hole_sum_bounds(gt, iou_thresholds).min()
    pw = width + 2
    total = (height + 2) * pw
    (parent, size, added, box, mask, is_dirty, dirty, potential, active, position, first, area_size, area2,
     euler4, window_area2, _, _, crack) = ws
    added[:] = 0
    is_dirty[:] = False
    outside = 0
    for p in range(pw):  # the frame: top and bottom rows, left and right columns
        for f in (p, total - pw + p):
            added[f] = 1
            parent[f] = outside
    for y in range(1, height + 1):
        for f in (y * pw, y * pw + pw - 1):
            added[f] = 1
            parent[f] = outside
    size[outside] = total  # the frame stays the root of whatever touches it
    mask[outside] = 0
    # the frame's box spans the padded image: pixels that join it never grow it
    box[outside, 0] = -1
    box[outside, 1] = -1
    box[outside, 2] = width
    box[outside, 3] = height
    num_dirty = 0
    counts = np.zeros(iou_thresholds.shape[0], np.int64)
    offsets = _neighbour_offsets(pw)
    low = 0  # pixels with q < low are in
    for k in range(last + 1):
        # holes count in multi-contour mode only; the background has no reach bits
        num_dirty, _ = _add_pixels(
            order, starts, low, levels[k] + 1, 1, pw, offsets,
            parent, size, added, box, mask, is_dirty, dirty,
            potential, active, position, first, area_size, area2, euler4, window_area2, crack,
            counts, counts, num_dirty, 0, False, True,
        )
        low = max(low, levels[k] + 1)
        if need[k]:  # roots stay dirty until a threshold that needs them
            out[k] |= _rescore_holes(
                parent, box, mask, is_dirty, dirty, num_dirty, outside, height, width, gt, iou_thresholds, least_sum,
                counts,
            )
            num_dirty = 0


@nb.njit(parallel=True, **_NOGIL)
def _correct_batch(q, maxima, level_table, gt_flat, gt_offsets, iou_thresholds, multi_contour, num_chunks):
    num_images, height, width = q.shape
    num_thresholds = level_table.shape[0]
    all_hit = (1 << iou_thresholds.shape[0]) - 1
    out = np.zeros((num_images, num_thresholds), np.int64)
    # Chunks of images share one workspace: fresh large arrays per image cost page faults.
    for c in nb.prange(num_chunks):
        ws = _workspace(height, width)
        order = np.empty(height * width, np.int64)  # pixel codes (_pixels_by_value)
        hole_reach = np.zeros(num_thresholds, np.int64)
        for i in range(c * num_images // num_chunks, (c + 1) * num_images // num_chunks):
            levels = level_table[:, maxima[i]].copy()
            gt = gt_flat[gt_offsets[i] : gt_offsets[i + 1]]
            flat = q[i].ravel()
            hole_reach[:] = 0
            starts = _pixels_by_value(flat, height, width, order)
            _foreground_sweep(
                order,
                starts,
                height,
                width,
                levels,
                gt,
                iou_thresholds,
                multi_contour,
                out[i],
                hole_reach,
                ws,
            )
            if multi_contour:
                # The hole sweep is needed only where a hole could still add a δ that the
                # components' own boxes did not reach (up to the last such threshold).
                any_need = False
                for k in range(num_thresholds):
                    hole_reach[k] &= all_hit ^ out[i, k]
                    any_need |= hole_reach[k] != 0
                if any_need:
                    _hole_sweep(order, starts, height, width, levels, gt, iou_thresholds, out[i], hole_reach, ws)
    return out


@nb.njit(parallel=True, **_NOGIL)
def _quantize(maps, scale, out, flags):
    """out = trunc(maps · 255) in the maps' dtype; flags[i] bit 0: NaN, bit 1: outside [0, 1]."""
    for i in nb.prange(maps.shape[0]):
        m = maps[i]
        o = out[i]
        flag = 0
        for y in range(m.shape[0]):
            for x in range(m.shape[1]):
                v = m[y, x]
                if v != v:
                    flag |= 1
                elif v < 0 or v > 1:
                    flag |= 2
                else:
                    o[y, x] = np.uint8(v * scale)
        flags[i] = flag


def quantize_scoremaps(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) float score maps → uint8(score · 255), in one compiled pass; same result and
    same errors as :func:`fastwsol.evaluation.boxes.scoremap_to_uint8`."""
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"score maps must be (N, H, W), got shape {maps.shape}")
    if maps.dtype not in (np.float32, np.float64):
        maps = maps.astype(np.float64)
    maps = np.ascontiguousarray(maps)
    out = np.zeros(maps.shape, np.uint8)
    flags = np.zeros(maps.shape[0], np.int64)
    _quantize(maps, maps.dtype.type(255), out, flags)
    if (flags & 1).any():
        raise ValueError("the score map contains NaN (normalise it first: NaN maps become zeros)")
    if (flags & 2).any():
        raise ValueError(f"score map values must lie in [0, 1], got [{maps.min()}, {maps.max()}]")
    return out


@nb.njit(parallel=True, **_NOGIL)
def _normalize_and_quantize(maps, out):
    for i in nb.prange(maps.shape[0]):
        m = maps[i]
        low = m[0, 0]
        high = m[0, 0]
        has_nan = False
        for y in range(m.shape[0]):
            for x in range(m.shape[1]):
                v = m[y, x]
                if v != v:
                    has_nan = True
                low = min(low, v)
                high = max(high, v)
        peak = high - low  # = max(x − min): rounding is monotone
        if has_nan or peak == 0:
            out[i] = 0
            continue
        o = out[i]
        scale = np.float32(255)
        for y in range(m.shape[0]):
            for x in range(m.shape[1]):
                o[y, x] = np.uint8(((m[y, x] - low) / peak) * scale)


def normalize_and_quantize(maps: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(N, H, W) float32 upsampled CAMs → uint8 score maps in one compiled pass: bit-for-bit
    ``quantize_scoremaps(normalize_scoremaps(maps))`` (same float32 operations: subtract the
    minimum, divide by the new maximum, × 255, truncate; NaN or constant → zeros) without
    materialising the float score maps. ``out``: an optional C-contiguous uint8 (N, H, W)
    array to write into."""
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), got shape {maps.shape}")
    if out is None:
        out = np.empty(maps.shape, np.uint8)
    elif out.shape != maps.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {maps.shape}")
    _normalize_and_quantize(maps, out)
    return out


def correct_at_thresholds_component_tree(
    q: np.ndarray,
    gt_boxes: list[np.ndarray],
    level_table: np.ndarray,
    iou_thresholds: tuple[int, ...] = (30, 50, 70),
    multi_contour: bool = True,
) -> np.ndarray:
    """Bool (N, len(iou_thresholds), T): image i is correct at IoU δ_j and CAM threshold k.

    ``q``: (N, H, W) uint8 quantised score maps; ``gt_boxes``: per image (k_i, 4) boxes in
    score-map pixels; ``level_table``: :func:`~fastwsol.evaluation.boxes.threshold_levels`.
    """
    q = np.ascontiguousarray(q, dtype=np.uint8)
    if q.ndim != 3:
        raise ValueError(f"quantised score maps must be (N, H, W), got shape {q.shape}")
    if len(gt_boxes) != q.shape[0]:
        raise ValueError(f"{len(gt_boxes)} GT box arrays for {q.shape[0]} score maps")
    if len(iou_thresholds) > 62:
        raise ValueError("at most 62 IoU thresholds")
    if max(q.shape[1:], default=0) > 32000:
        raise ValueError(f"score maps of at most 32000 pixels a side, got {q.shape[1:]}")
    gt_list = [np.asarray(b, dtype=np.int64).reshape(-1, 4) for b in gt_boxes]
    empty = [i for i, b in enumerate(gt_list) if len(b) == 0]
    if empty:
        raise ValueError(f"image {empty[0]} of the batch has no GT box")
    gt_offsets = np.zeros(len(gt_list) + 1, np.int64)
    gt_offsets[1:] = np.cumsum([len(b) for b in gt_list])
    gt_flat = np.concatenate(gt_list) if gt_list else np.zeros((0, 4), np.int64)
    maxima = q.reshape(q.shape[0], -1).max(axis=1).astype(np.int64) if q.size else np.zeros(0, np.int64)
    ious = np.array([delta / 100 for delta in iou_thresholds], dtype=np.float64)
    masks = _correct_batch(
        q,
        maxima,
        np.ascontiguousarray(level_table, dtype=np.int64),
        gt_flat,
        gt_offsets,
        ious,
        bool(multi_contour),
        min(len(q), 4 * nb.get_num_threads()),
    )
    bits = np.arange(len(iou_thresholds), dtype=np.int64)
    return ((masks[:, None, :] >> bits[None, :, None]) & 1).astype(bool)
