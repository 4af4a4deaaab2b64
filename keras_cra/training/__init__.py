"""Training, fine-tuning and evaluation functions behind `training/*.py`."""
