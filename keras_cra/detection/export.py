"""Exports a trained detector: SavedModel (decode and NMS inside) and TFLite.

SavedModel `serving_default`: uint8 images `(N, S, S, 3)` in; `boxes`
(`xyxy` pixels), `classes`, `scores` and `num_detections` out, the
detector's own decoding and non-max suppression inside.

TFLite: keras-hub's non-max suppression does not convert to builtin ops (its
`tf.BitwiseAnd` has no builtin; metadata.json records the converter's
message), so the
`.tflite` ends at the decoded boxes `(N, anchors, 4)` and class scores
`(N, anchors, classes)`; `nms` below (or `tf.image.non_max_suppression`)
finishes the job.
"""

import json
import os

import numpy as np

SAVED_MODEL = "saved_model"
TFLITE = "detector_decoded.tflite"


def _functions(model, image_size):
    import tensorflow as tf

    from keras_cra.data.pipeline import normalize

    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")

    def decoded(images):
        x = normalize(images)
        raw = model(x, training=False)
        anchors = model.anchor_generator(x)
        anchors = tf.concat(list(anchors.values()), axis=0)
        import keras

        boxes = keras.utils.bounding_boxes.decode_deltas_to_boxes(
            anchors=anchors, boxes_delta=raw["bbox_regression"], encoded_format="center_xywh",
            anchor_format=model.anchor_generator.bounding_box_format,
            box_format=model.bounding_box_format, image_shape=(image_size, image_size, 3))
        return {"boxes": boxes, "scores": tf.sigmoid(raw["cls_logits"])}

    def full(images):
        x = normalize(images)
        raw = model(x, training=False)

        def one(args):
            # keras-hub's NMS needs a static batch size: decode image by image.
            box, cls, image = args
            y = model.decode_predictions({"bbox_regression": box[None], "cls_logits": cls[None]},
                                         image[None])
            return (y["boxes"][0], tf.cast(y["labels"][0], tf.int32), y["confidence"][0],
                    tf.cast(y["num_detections"][0], tf.int32))

        boxes, classes, scores, count = tf.map_fn(
            one, (raw["bbox_regression"], raw["cls_logits"], x),
            fn_output_signature=(tf.float32, tf.int32, tf.float32, tf.int32))
        return {"boxes": boxes, "classes": classes, "scores": scores, "num_detections": count}

    return tf.function(decoded, input_signature=[spec]), tf.function(full, input_signature=[spec])


def nms(boxes, scores, iou_threshold=0.5, score_threshold=0.05, max_detections=100):
    """Per-image greedy NMS over all classes of the TFLite outputs (NumPy).

    Returns `(boxes (K, 4), classes (K,), scores (K,))`, best first.
    """
    classes = scores.argmax(-1)
    best = scores.max(-1)
    order = np.argsort(-best)
    order = order[best[order] >= score_threshold]
    keep = []
    while len(order) and len(keep) < max_detections:
        i, rest = order[0], order[1:]
        keep.append(i)
        x0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        iou = inter / np.maximum(area(boxes[i]) + area(boxes[rest]) - inter, 1e-9)
        order = rest[(iou <= iou_threshold) | (classes[rest] != classes[i])]
    keep = np.array(keep, dtype=int)
    return boxes[keep], classes[keep], best[keep]


def export_detector(model, out, image_size, class_names, verify_images=None,
                    overwrite=False):
    """Writes `out/saved_model`, `out/detector_decoded.tflite` and
    `out/metadata.json` (with the sha256 of every file and the verification
    against Keras on `verify_images`, uint8). Returns the metadata dict.

    Written as every export is (`keras_cra.files.atomic_output`): into a
    temporary folder beside `out`, verified, then renamed, so a kill at any
    moment leaves no export or a whole one. An existing `out` is replaced only
    with `overwrite` and only if it holds an earlier detector export.
    """
    from keras_cra.export import safety, tflite
    from keras_cra.files import atomic_output

    with atomic_output(out, "--export", overwrite, is_detector_export, folder=True) as tmp:
        saved = os.path.join(tmp, SAVED_MODEL)
        nms_error = _write_saved_model(model, saved, image_size)
        flat = tflite.convert_function(_functions(model, image_size)[0])  # a fresh trace
        with open(os.path.join(tmp, TFLITE), "wb") as f:
            f.write(flat)
        metadata = {"image_size": image_size, "class_names": list(class_names),
                    "inputs": "uint8 images (N, S, S, 3), RGB 0-255",
                    "saved_model_outputs": ["boxes (xyxy pixels)", "classes", "scores",
                                            "num_detections"],
                    "tflite_outputs": ["boxes (N, anchors, 4) xyxy pixels",
                                       "scores (N, anchors, classes)"],
                    "tflite_ops": sorted(tflite.op_names(flat)),
                    "full_tflite_error": nms_error,
                    "sha256": safety.sha256_record(tmp, [saved, os.path.join(tmp, TFLITE)])}
        if verify_images is not None:
            metadata["verification"] = check = verify(model, tmp, verify_images)
            failures = verification_failures(check)
            if failures:  # inside the atomic block: nothing is written
                from keras_cra.export.base import ExportError

                raise ExportError("Detector export verification failed: " + "; ".join(failures))
        with open(os.path.join(tmp, "metadata.json"), "w") as f:
            json.dump(metadata, f, indent=2)
    return metadata


def is_detector_export(path):
    """Whether `path` holds an earlier detector export and nothing else."""
    from keras_cra.export.exporter import is_export_folder

    return is_export_folder(path, {SAVED_MODEL, TFLITE, "metadata.json"}, ("tflite_outputs",))


def _write_saved_model(model, saved, image_size):
    """The SavedModel (signatures `serving_default` with NMS, `decoded`); returns why its
    NMS signature cannot be a builtins-only TFLite model (the converter's words)."""
    import tensorflow as tf

    decoded, full = _functions(model, image_size)
    module = tf.Module()
    module.model = model
    module.serve = full
    module.decoded = decoded
    tf.saved_model.save(module, saved,
                        signatures={"serving_default": full.get_concrete_function(),
                                    "decoded": decoded.get_concrete_function()})
    try:
        _convert(saved, "serving_default")
    except Exception as e:  # the converter names the ops it cannot lower
        text = str(e)
        ops_line = [line for line in text.splitlines() if "TF Select ops:" in line]
        return ops_line[0].strip() if ops_line else " ".join(text.split())[-300:]
    return None


def tflite_outputs(interp):
    """`(boxes index, scores index)` of the decoded `.tflite` (outputs Identity, Identity_1)."""
    details = sorted(interp.get_output_details(), key=lambda d: d["name"])
    return details[0]["index"], details[1]["index"]


def run_tflite(interp, image):
    """Decoded boxes `(anchors, 4)` and scores `(anchors, classes)` of one uint8 image."""
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], (1,) + tuple(image.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], image[None].astype(np.uint8))
    interp.invoke()
    boxes, scores = tflite_outputs(interp)
    return interp.get_tensor(boxes)[0], interp.get_tensor(scores)[0]


def _convert(saved_model, signature):
    import tensorflow as tf

    from keras_cra.export.tflite import builtins_only

    return builtins_only(tf.lite.TFLiteConverter.from_saved_model(
        saved_model, signature_keys=[signature])).convert()


# How far an export may differ from the Keras detector (boxes in pixels), as for every
# format of a classifier export (keras_cra.export.formats).
TOLERANCES = {"saved_model_max_box_diff": 1e-3, "tflite_max_box_diff": 0.5,
              "tflite_max_score_diff": 1e-3}


def verification_failures(check):
    """What of a `verify` result is outside `TOLERANCES` (or detects other boxes)."""
    failures = [f"{key} {check[key]:.2e} > {bound}" for key, bound in TOLERANCES.items()
                if not check[key] <= bound]
    if not check["saved_model_same_detections"]:
        failures.append("the SavedModel detects a different number of boxes than Keras")
    return failures


def verify(model, out, images):
    """Max differences of the exports against the Keras model on `images` (uint8)."""
    import tensorflow as tf

    from keras_cra.export import tflite

    decoded, full = _functions(model, images.shape[1])
    want_full = full(tf.constant(images))
    want = decoded(tf.constant(images))
    loaded = tf.saved_model.load(os.path.join(out, SAVED_MODEL))
    got_full = loaded.signatures["serving_default"](images=tf.constant(images))
    interp = tflite.interpreter(os.path.join(out, TFLITE))
    outputs = [run_tflite(interp, image) for image in images]
    boxes = np.stack([o[0] for o in outputs])
    scores = np.stack([o[1] for o in outputs])
    return {
        "images": int(len(images)),
        "saved_model_max_box_diff": float(np.max(np.abs(
            got_full["boxes"].numpy() - want_full["boxes"].numpy()), initial=0.0)),
        "saved_model_same_detections": bool(np.array_equal(
            got_full["num_detections"].numpy(), want_full["num_detections"].numpy())),
        "tflite_max_box_diff": float(np.max(np.abs(boxes - want["boxes"].numpy()))),
        "tflite_max_score_diff": float(np.max(np.abs(scores - want["scores"].numpy()))),
    }
