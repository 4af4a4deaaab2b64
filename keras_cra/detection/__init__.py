"""Object detection with CRA backbones: data, keras-hub RetinaNet, COCO metrics."""
