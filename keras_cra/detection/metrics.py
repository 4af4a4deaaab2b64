"""COCO detection metrics, computed by pycocotools (the COCO team's own code)."""

import contextlib
import io

import numpy as np

from keras_cra.errors import ArgumentError

NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large")


def coco_metrics(gt_boxes, gt_labels, pred_boxes, pred_labels, pred_scores, gt_crowd=None):
    """mAP@[.5:.95], mAP@.5, mAP@.75 and per-size mAP of a set of images.

    All boxes are `xyxy` pixels; arrays are per image (lists of arrays, or
    padded arrays with label -1 marking padding). Crowd ground truth
    (`gt_crowd` true) is matched but never counted, as COCO does.

    Returns:
        `{name: float}` for `NAMES`; a size without ground truth gives -1 (as
        pycocotools reports it).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    lengths = {len(gt_boxes), len(gt_labels), len(pred_boxes), len(pred_labels),
               len(pred_scores)} | ({len(gt_crowd)} if gt_crowd is not None else set())
    if len(lengths) != 1:
        raise ArgumentError("Ground truth and predictions need one entry per image. Received: "
                         f"{len(gt_boxes)} ground-truth and {len(pred_boxes)} predicted images")
    images, annotations, detections = [], [], []
    classes = set()
    for i in range(len(gt_boxes)):
        images.append({"id": i + 1})
        labels = np.asarray(gt_labels[i]).reshape(-1)
        boxes = np.asarray(gt_boxes[i], dtype="float64").reshape(-1, 4)
        crowd = (np.zeros(len(labels), bool) if gt_crowd is None
                 else np.asarray(gt_crowd[i], bool).reshape(-1))
        for box, label, is_crowd in zip(boxes, labels, crowd):
            if label < 0:
                continue
            w, h = box[2] - box[0], box[3] - box[1]
            classes.add(int(label))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(label) + 1, "area": float(w * h),
                                "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                                "iscrowd": int(is_crowd)})
        p_labels = np.asarray(pred_labels[i]).reshape(-1)
        p_boxes = np.asarray(pred_boxes[i], dtype="float64").reshape(-1, 4)
        p_scores = np.asarray(pred_scores[i], dtype="float64").reshape(-1)
        for box, label, score in zip(p_boxes, p_labels, p_scores):
            if label < 0 or not np.isfinite(box).all():
                continue
            classes.add(int(label))
            detections.append({"image_id": i + 1, "category_id": int(label) + 1,
                               "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                        float(box[3] - box[1])], "score": float(score)})
    if not annotations:
        raise ArgumentError("The ground truth has no boxes; mAP is undefined. "
                         f"Received: {len(gt_boxes)} images without boxes")
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c + 1} for c in sorted(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.createIndex()
        if not detections:
            return {name: 0.0 for name in NAMES}
        dt = gt.loadRes(detections)
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(evaluation.stats[i]) for i, name in enumerate(NAMES)}
