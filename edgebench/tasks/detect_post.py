"""A detector's outputs on the host: decoding, NMS and COCO mAP (pycocotools), kept per image.

The `detect` task's post-processing (edgebench.tasks.detect): the exported graph ends at the raw
head tensor, so every runtime is timed on the network alone, and decoding + NMS run here, the
same numpy code for every runtime's outputs.

    >>> dets = decode(outputs, num_classes=5)               # outputs: (N, C + 4, H, W) raw
    >>> ev_stats, matches = coco_map_and_matches(dets, boxes, classes)
    >>> map_from_matches(matches, np.bincount(resample, minlength=len(dets)))["map50"]

pycocotools is the reference implementation published COCO numbers come from (101-point
interpolation, maxDets, crowd/ignore rules). Measured at 500 test images, ~20 detections each:
stock COCOeval ~0.6 s; restricted to area "all" and maxDets 100 (the numbers reported) ~0.22 s
with identical values; decode + NMS ~0.06 s. For intervals, COCOeval is not rerun per resample:
`Matches` keeps its per-image matching and `map_from_matches` redoes only accumulate's
arithmetic for a weighted image set (~1.5 ms; equal to COCOeval on real resamples to 1e-16,
tests/tasks/test_detect.py).
"""

from __future__ import annotations

import contextlib
import io
from typing import NamedTuple

import numpy as np

SCORE_THRESHOLD = 0.05  # AP integrates over confidences; 0.01 gave the same mAP (4 decimals) with 3.5x the detections
MAX_DETECTIONS = 100  # per image, COCO's maxDets
NMS_IOU = 0.5


class Detections(NamedTuple):
    boxes: np.ndarray  # (K, 4) float32, x1 y1 x2 y2 pixels
    scores: np.ndarray  # (K,) float32
    classes: np.ndarray  # (K,) int64


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _max_pool3(x: np.ndarray) -> np.ndarray:
    """3x3 max pool, stride 1, same size, over the last two axes (CenterNet's peak test)."""
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], constant_values=-np.inf)
    h, w = x.shape[-2:]
    return np.max([p[..., i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=0)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (..., K, 4) and (..., L, 4) x1y1x2y2 boxes -> (..., K, L)."""
    lt = np.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = np.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(a[..., 2:] - a[..., :2], axis=-1)
    area_b = np.prod(b[..., 2:] - b[..., :2], axis=-1)
    return inter / np.maximum(area_a[..., :, None] + area_b[..., None, :] - inter, 1e-9)


def batched_nms(boxes: np.ndarray, classes: np.ndarray, valid: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Greedy class-wise NMS for a batch at once: boxes (N, K, 4) sorted best first per image,
    classes and valid (N, K). Returns the kept mask (N, K).

    Box i removes a later box j of its class with IoU > `iou` only if i itself is kept: the
    loop runs over K (<= max detections) with all images vectorized, ~50x faster than a
    per-image Python NMS at 500 images.
    """
    n, k = classes.shape
    suppress = (pairwise_iou(boxes, boxes) > iou) & (classes[:, :, None] == classes[:, None, :])
    suppress &= np.triu(np.ones((k, k), dtype=bool), 1)  # only later (lower-scored) boxes
    keep = valid.copy()
    for i in range(k):
        keep &= ~(keep[:, i, None] & suppress[:, i])
    return keep


def decode(
    outputs: np.ndarray,
    num_classes: int,
    stride: int = 4,
    image_size: tuple[int, int] | None = None,
    score_threshold: float = SCORE_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
    nms_iou: float = NMS_IOU,
) -> list[Detections]:
    """Raw model outputs (N, C + 4, H, W) -> per image Detections, best first.

    Peaks = cells that are the max of their 3x3 neighbourhood in their class's heatmap (the
    NMS CenterNet needs); the top `max_detections` peaks at or above `score_threshold` then go
    through class-wise box NMS, which removes the rare duplicate of one object across
    neighbouring cells that the peak test lets through.
    """
    outputs = np.asarray(outputs, dtype=np.float32)
    n, _, gh, gw = outputs.shape
    img_h, img_w = image_size or (gh * stride, gw * stride)
    heat = _sigmoid(outputs[:, :num_classes])
    peaks = np.where(heat == _max_pool3(heat), heat, 0).reshape(n, -1)  # (N, C*H*W)
    top = np.argsort(-peaks, axis=1, kind="stable")[:, :max_detections]
    scores = np.take_along_axis(peaks, top, axis=1)
    k = max(1, int((scores >= score_threshold).sum(axis=1).max()))  # sorted: a prefix is valid
    top, scores = top[:, :k], scores[:, :k]
    classes, cell = np.divmod(top, gh * gw)
    gy, gx = np.divmod(cell, gw)
    reg = np.take_along_axis(outputs[:, num_classes:].reshape(n, 4, -1), cell[:, None, :], axis=2)
    cx, cy = (gx + reg[:, 0]) * stride, (gy + reg[:, 1]) * stride
    w = np.exp(np.clip(reg[:, 2], -5, 5)) * stride  # clip: an int8 outlier must not overflow
    h = np.exp(np.clip(reg[:, 3], -5, 5)) * stride
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    boxes = np.clip(boxes, 0, [img_w, img_h, img_w, img_h]).astype(np.float32)
    keep = batched_nms(boxes, classes, scores >= score_threshold, nms_iou)
    return [
        Detections(boxes[i, keep[i]], scores[i, keep[i]].astype(np.float32), classes[i, keep[i]].astype(np.int64))
        for i in range(n)
    ]


# ---- COCO mAP ------------------------------------------------------------------------------


def _coco_eval(pred: list[Detections], gt_boxes: np.ndarray, gt_classes: np.ndarray, stock: bool = False):
    """A pycocotools COCOeval, evaluated and accumulated, from in-memory dicts; None without
    detections. Unless `stock`, only area range "all" and maxDets 100 are evaluated (the two
    numbers we report): 1/4 of evaluateImg's calls and 1/12 of accumulate's work, ~4x faster
    in all, with the same numbers (run_prototype.py checks against the stock run)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    num_classes = int(max(gt_classes.max(), max((int(d.classes.max()) for d in pred if len(d.classes)), default=0))) + 1
    images, annotations, results = [], [], []
    for i, (boxes, classes) in enumerate(zip(gt_boxes, gt_classes, strict=True)):
        images.append({"id": i, "width": 0, "height": 0})
        for b, c in zip(boxes[classes >= 0], classes[classes >= 0], strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c),
                                "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
    for i, d in enumerate(pred):
        for b, s, c in zip(d.boxes.tolist(), d.scores.tolist(), d.classes.tolist(), strict=True):
            results.append({"image_id": i, "category_id": c, "score": s,
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": k, "name": str(k)} for k in range(num_classes)]}  # fmt: skip
        gt.createIndex()
        if not results:
            return None
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        if not stock:
            ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
            ev.params.maxDets = [MAX_DETECTIONS]
        ev.evaluate()
        ev.accumulate()
        if stock:
            ev.summarize()
    return ev


def _stats(ev) -> dict[str, float]:
    """What COCOeval.summarize reports as AP and AP50 (area "all", maxDets 100): the mean of
    the 101-point precision over classes (and IoU thresholds), -1 entries (no GT) left out."""
    if ev.stats is not None and len(ev.stats):  # the stock run summarized already
        return {"map50": float(ev.stats[1]), "map": float(ev.stats[0])}
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K)
    mean = lambda a: float(a[a > -1].mean()) if (a > -1).any() else -1.0  # noqa: E731
    return {"map50": mean(precision[0]), "map": mean(precision)}


def coco_map(
    pred_per_image: list[Detections], gt_boxes: np.ndarray, gt_classes: np.ndarray, stock: bool = False
) -> dict[str, float]:
    """{"map50": AP@0.5, "map": AP@[0.5:0.95]} from pycocotools (area "all", maxDets 100).
    gt_boxes (N, M, 4) x1y1x2y2 pixels, gt_classes (N, M) with -1 padding."""
    ev = _coco_eval(pred_per_image, gt_boxes, gt_classes, stock)
    return {"map50": 0.0, "map": 0.0} if ev is None else _stats(ev)


# ---- per-image matches, for bootstrap intervals --------------------------------------------


class Matches(NamedTuple):
    """COCOeval's per-image matching, per class, in COCOeval.accumulate's order (images in
    order, then a stable sort by score). For class k: image[k] (D,) the image of each
    detection; tp[k], fp[k] (T, D) bool at each IoU threshold (ignored detections are
    neither); n_gt[k] (num_images,) non-ignored ground truths per image. Detections after
    the last true positive are dropped: they cannot change AP on any resample."""

    image: list[np.ndarray]
    tp: list[np.ndarray]
    fp: list[np.ndarray]
    n_gt: list[np.ndarray]
    num_images: int


def image_matches(pred: list[Detections], gt_boxes: np.ndarray, gt_classes: np.ndarray) -> Matches:
    """One COCOeval run, kept per image."""
    return coco_map_and_matches(pred, gt_boxes, gt_classes)[1]


def coco_map_and_matches(
    pred: list[Detections], gt_boxes: np.ndarray, gt_classes: np.ndarray
) -> tuple[dict[str, float], Matches]:
    """`coco_map` and `image_matches` from one COCOeval run."""
    ev = _coco_eval(pred, gt_boxes, gt_classes)
    if ev is None:
        raise ValueError("no detections at all: nothing to match")
    return _stats(ev), _matches(ev)


def _matches(ev) -> Matches:
    p = ev.params
    n_img, n_area, n_thr = len(p.imgIds), len(p.areaRng), len(p.iouThrs)
    out = Matches([], [], [], [], n_img)
    for k in range(len(p.catIds)):
        no_flags = np.zeros((n_thr, 0), bool)  # seeds the lists: a class may have no detection
        image, scores, hit, ign = [np.zeros(0, np.int64)], [np.zeros(0)], [no_flags], [no_flags]
        n_gt = np.zeros(n_img, np.int64)
        for i in range(n_img):
            e = ev.evalImgs[k * n_area * n_img + i]  # order: class, area (0 = "all"), image
            if e is None:
                continue
            n_gt[i] = int(np.sum(e["gtIgnore"] == 0))
            image.append(np.full(len(e["dtScores"]), i))
            scores.append(np.asarray(e["dtScores"], dtype=np.float64))
            hit.append(e["dtMatches"] > 0)
            ign.append(e["dtIgnore"].astype(bool))
        order = np.argsort(-np.concatenate(scores), kind="mergesort")  # as accumulate sorts
        hits, ignored = np.concatenate(hit, axis=1)[:, order], np.concatenate(ign, axis=1)[:, order]
        tp, fp = hits & ~ignored, ~hits & ~ignored
        last = int(np.flatnonzero(tp.any(axis=0)).max(initial=-1)) + 1
        out.image.append(np.concatenate(image)[order][:last])
        out.tp.append(tp[:, :last])
        out.fp.append(fp[:, :last])
        out.n_gt.append(n_gt)
    return out


def map_from_matches(m: Matches, weights: np.ndarray | None = None) -> dict[str, float]:
    """mAP of the image set where image i appears weights[i] times (a bootstrap resample is
    np.bincount(draw, minlength=n)). COCOeval.accumulate's arithmetic, vectorized over IoU
    thresholds: cumulative TP/FP, precision envelope, precision at 101 recall points
    (searchsorted "left"); weights are exact because copies of one detection are adjacent
    in the sorted list and add no point that changes the envelope."""
    w = np.ones(m.num_images) if weights is None else np.asarray(weights, dtype=np.float64)
    rec_thrs = np.linspace(0, 1, 101)
    ap = []  # (T,) per class that has ground truth
    for image, tp_flags, fp_flags, n_gt in zip(m.image, m.tp, m.fp, m.n_gt, strict=True):
        npig = float(w @ n_gt)
        if npig == 0:
            continue  # COCO: -1, left out of the mean
        dw = w[image]
        tp, fp = np.cumsum(tp_flags * dw, axis=1), np.cumsum(fp_flags * dw, axis=1)
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # envelope: max to the right
        q = np.zeros((len(pr), len(rec_thrs)))
        for t in range(len(pr)):
            idx = np.searchsorted(rc[t], rec_thrs, side="left")
            ok = idx < rc.shape[1]
            q[t, ok] = pr[t, idx[ok]]
        ap.append(q.mean(axis=1))
    ap_arr = np.array(ap)  # (K, T)
    return {"map50": float(ap_arr[:, 0].mean()), "map": float(ap_arr.mean())}


def map50_many(m: Matches, weights: np.ndarray) -> np.ndarray:
    """`map_from_matches(m, w)["map50"]` for every row w of `weights` (B, num_images) at once: the
    bootstrap's B resamples in one pass (cumulative sums over a (B, detections) matrix per class;
    only the IoU-0.5 threshold). ~30x faster than B calls; equal to them (tests/tasks)."""
    w = np.asarray(weights, dtype=np.float64)
    rec_thrs = np.linspace(0, 1, 101)
    aps = []
    for image, tp_flags, fp_flags, n_gt in zip(m.image, m.tp, m.fp, m.n_gt, strict=True):
        npig = w @ n_gt  # (B,)
        dw = w[:, image]  # (B, D)
        tp, fp = np.cumsum(tp_flags[0] * dw, axis=1), np.cumsum(fp_flags[0] * dw, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rc = tp / npig[:, None]
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # envelope: max to the right
        q = np.zeros((len(w), len(rec_thrs)))
        q = np.zeros((len(w), len(rec_thrs)))
        for b in np.flatnonzero(npig > 0):  # (one searchsorted per row: exact, as accumulate does)
            idx = np.searchsorted(rc[b], rec_thrs, side="left")
            ok = idx < rc.shape[1]
            q[b, ok] = pr[b, idx[ok]]
        ap = q.mean(axis=1)
        ap[npig == 0] = np.nan  # COCO: -1, left out of the mean
        aps.append(ap)
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.array(aps), axis=0)
