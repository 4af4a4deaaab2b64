"""PyTorch references written for the tests: the CRA authors' module names
(`basic_conv`, `stage_N`, `convK` = Sequential(conv, bn[, relu]), `cra.conv_cra`,
`shortcut`, `classifier`) and torchvision's (`conv1`, `bn1`, `layerN`, `downsample`, `fc`)."""

import sys
import types

import numpy as np
import torch
from torch import nn


class CRA(nn.Module):
    def __init__(self, channels, pool_size=7):
        super().__init__()
        self.pool = nn.AdaptiveMaxPool2d(pool_size)
        self.conv_cra = nn.Conv2d(channels, channels, pool_size, groups=channels, bias=True)

    def forward(self, x):
        return x * torch.sigmoid(self.conv_cra(self.pool(x)))


def conv_bn(cin, cout, k, stride=1, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class AuthorsBottleneck(nn.Module):
    def __init__(self, cin, planes, stride, groups=1, width_per_group=64):
        super().__init__()
        width = int(planes * width_per_group / 64) * groups
        self.conv1 = conv_bn(cin, width, 1)
        self.conv2 = conv_bn(width, width, 3, stride, groups)
        self.conv3 = conv_bn(width, planes * 4, 1, relu=False)
        self.cra = CRA(planes * 4)
        self.shortcut = (conv_bn(cin, planes * 4, 1, stride, relu=False)
                         if stride != 1 or cin != planes * 4 else nn.Identity())

    def forward(self, x):
        y = self.cra(self.conv3(self.conv2(self.conv1(x))))
        return torch.relu(y + self.shortcut(x))


class AuthorsResNet(nn.Module):
    def __init__(self, depths=(3, 4, 6, 3), classes=1000, groups=1, width_per_group=64):
        super().__init__()
        self.basic_conv = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1))
        cin = 64
        for i, (depth, planes) in enumerate(zip(depths, (64, 128, 256, 512))):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(AuthorsBottleneck(cin, planes, stride, groups, width_per_group))
                cin = planes * 4
            setattr(self, f"stage_{i + 1}", nn.Sequential(*blocks))
        self.classifier = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.basic_conv(x)
        for i in range(4):
            x = getattr(self, f"stage_{i + 1}")(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class TVBottleneck(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes * 4))
                           if stride != 1 or cin != planes * 4 else None)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class TVResNet(nn.Module):
    def __init__(self, depths=(3, 4, 6, 3), classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (depth, planes) in enumerate(zip(depths, (64, 128, 256, 512))):
            blocks = []
            for j in range(depth):
                blocks.append(TVBottleneck(cin, planes, 2 if i > 0 and j == 0 else 1))
                cin = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def randomize(model, seed=0):
    """Non-trivial BN statistics and CRA biases, so the comparison means something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
            if isinstance(m, CRA):
                m.conv_cra.bias.uniform_(-1, 1, generator=g)
    return model.eval()


def _authors_metrics_module():
    """The authors' `metrics` module as their train.py imports it (`from metrics import
    RecorderMeter`), registered under that name so that pickle writes
    `metrics.RecorderMeter` exactly as their checkpoints hold it."""
    if "metrics" in sys.modules and hasattr(sys.modules["metrics"], "RecorderMeter"):
        return sys.modules["metrics"]
    module = types.ModuleType("metrics")

    class RecorderMeter:
        """Per-epoch losses and accuracies, as float32 NumPy arrays (train, val)."""

        def __init__(self, total_epoch):
            self.total_epoch = total_epoch
            self.current_epoch = 0
            self.epoch_losses = np.zeros((total_epoch, 2), dtype=np.float32) - 1
            self.epoch_accuracy = np.zeros((total_epoch, 2), dtype=np.float32)

        def update(self, idx, train_loss, train_acc, val_loss, val_acc):
            self.epoch_losses[idx] = train_loss, val_loss
            self.epoch_accuracy[idx] = train_acc, val_acc
            self.current_epoch = idx + 1
            return self.epoch_accuracy[: idx + 1, 1].max() == val_acc

    RecorderMeter.__module__ = "metrics"
    RecorderMeter.__qualname__ = "RecorderMeter"
    module.RecorderMeter = RecorderMeter
    sys.modules["metrics"] = module
    return module


def save_authors_checkpoint(model, path, data_parallel=True, legacy=False, epochs=100):
    """Writes `path` as the authors' train.py does: `save_checkpoint({'epoch', 'recorder',
    'state_dict', 'optimizer', 'scheduler'})` after an SGD step (momentum buffers in the
    optimizer state), with a DataParallel `module.` prefix when `data_parallel`.
    `legacy=True` writes PyTorch's pre-1.6 format (not a zip archive)."""
    recorder = _authors_metrics_module().RecorderMeter(epochs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [30, 60, 90], gamma=0.1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model(x).logsumexp(-1).mean().backward()
    optimizer.step()
    scheduler.step()
    model.load_state_dict(saved)  # keep the weights the caller compares against
    model.train(was_training)
    optimizer.zero_grad()
    recorder.update(0, torch.tensor(6.9).item(), 0.1, 6.8, 0.2)
    state = model.state_dict()
    if data_parallel:
        state = {"module." + k: v for k, v in state.items()}
    torch.save({"epoch": 1, "recorder": recorder, "state_dict": state,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
               path, _use_new_zipfile_serialization=not legacy)
