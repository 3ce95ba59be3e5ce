"""The model zoo, built from our layers: the seed's MNIST CNN and torchvision's ResNets.

    model = cnn.models.MyCNN(batchnorm=True)                    # (N, 1, 28, 28) -> (N, 10)
    model = cnn.models.resnet18(num_classes=10, in_channels=1)  # torchvision's state_dict keys

mycnn.py: MyCNN and its initialisation; resnet.py: ResNet-18/34/50, their blocks, and
``load_pretrained`` (torchvision's files, a head of another size, an RGB stem for 1 channel).
"""
from .mycnn import MyCNN
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50

__all__ = ["MyCNN", "ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50"]
