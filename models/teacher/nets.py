"""The teacher's PyTorch nets and the input scaling that training and the ONNX file share.

Why these two layouts: a ResNet-18 layout (without the stem's downsampling: 48x48 faces are small
already) and a VGG layout, the design behind FER2013's best published single nets, whose mistakes
differ from the ResNet's, so out-of-fold labels averaged over both beat either's. PyTorch is
imported inside the functions: it is optional, and `import_torch` says so in one sentence.
"""
from __future__ import annotations

from engine.core.errors import UserError
from models.teacher.pack import CLASSES


def import_torch(step: str):
    """The torch module, or one sentence naming the sub-command `step` that needs it."""
    try:
        import torch
    except ImportError:
        raise UserError(f"`{step}` needs PyTorch (pip install torch); the lent GPU machines have it") from None
    return torch


def _nets():
    import torch.nn as nn

    def conv_bn(cin, cout, stride=1):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout))
            self.skip = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.body(x) + self.skip(x))

    def resnet(width: int, drop: float = 0.3):
        """ResNet-18 layout without the stem's downsampling (48x48 faces are small already)."""
        w = [width, 2 * width, 4 * width, 8 * width]
        layers = [*conv_bn(1, w[0]), nn.ReLU(inplace=True)]
        cin = w[0]
        for i, c in enumerate(w):
            layers += [Block(cin, c, 1 if i == 0 else 2), Block(c, c, 1)]
            cin = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop), nn.Linear(cin, len(CLASSES))]
        return nn.Sequential(*layers)

    def vgg(width: int, drop: float = 0.4):
        """VGG layout (two 3x3 convs per stage, max-pooling, a wide dense head; no skip connections), the
        design behind FER2013's best published single nets: a second architecture whose mistakes differ
        from the ResNet's, so that out-of-fold labels averaged over both are better than either's."""
        w = [width, 2 * width, 4 * width, 8 * width]
        layers, cin = [], 1
        for c in w:
            layers += [*conv_bn(cin, c), nn.ReLU(inplace=True), *conv_bn(c, c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = c
        layers += [nn.Flatten(), nn.Dropout(drop), nn.Linear(cin * 3 * 3, 16 * width), nn.BatchNorm1d(16 * width),
                   nn.ReLU(inplace=True), nn.Dropout(drop), nn.Linear(16 * width, len(CLASSES))]
        return nn.Sequential(*layers)

    return {"resnet": resnet, "vgg": vgg}


def build(arch: str, width: int):
    return _nets()[arch](width)


def scale(x):
    """uint8-valued faces -> roughly zero-mean unit-range input, the same for training and ONNX."""
    return (x / 255.0 - 0.5) / 0.25
