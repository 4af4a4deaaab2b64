PYTHON ?= python3
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install data test test-all demo bench bench-quick ablate detect-demo

install:
	$(PYTHON) -m pip install -e ".[dev,torch,detection]"

# The README's test command (what CI runs). Slow full-size tests are opt-in: make test-all.
test:
	$(PYTHON) -m pytest -p no:benchmark -n 2 --dist loadgroup -q -m "not slow" tests

test-all:
	$(PYTHON) -m pytest -p no:benchmark -n 2 --dist loadgroup -q tests

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
