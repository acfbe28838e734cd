"""Image networks: shapes for any input size, and ResNet transfer learning from a local file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models

from {{ cookiecutter.package_name }}.networks.cnn import SmallCNN
from {{ cookiecutter.package_name }}.networks.resnet import ResNet
from {{ cookiecutter.package_name }}.system import Classifier


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 64, 48)])
def test_small_cnn_takes_any_image_size(shape: tuple[int, ...]) -> None:
    assert SmallCNN(shape, num_classes=7)(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("shape, small_input", [((1, 8, 8), True), ((3, 64, 64), False)])
def test_resnet_adapts_stem_and_head(shape: tuple[int, ...], small_input: bool) -> None:
    network = ResNet(shape, num_classes=5, small_input=small_input).eval()
    assert network(torch.randn(2, *shape)).shape == (2, 5)


@pytest.fixture
def imagenet_style_weights(tmp_path: Path) -> Path:
    """A torchvision resnet18 state_dict saved to disk, as a user would bring one offline."""
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pt"
    torch.save(models.resnet18(num_classes=1000).state_dict(), path)
    return path


def test_resnet_loads_local_weights_except_the_head(imagenet_style_weights: Path) -> None:
    pretrained = torch.load(imagenet_style_weights, weights_only=True)
    network = ResNet((3, 32, 32), 4, weights_path=imagenet_style_weights, small_input=False)
    state = network.net.state_dict()
    torch.testing.assert_close(state["layer4.1.conv2.weight"], pretrained["layer4.1.conv2.weight"])
    torch.testing.assert_close(state["conv1.weight"], pretrained["conv1.weight"])
    assert state["fc.weight"].shape == (4, 512)


def test_grey_images_get_the_mean_of_the_pretrained_rgb_filters(imagenet_style_weights) -> None:
    pretrained = torch.load(imagenet_style_weights, weights_only=True)["conv1.weight"]
    network = ResNet((1, 64, 64), 4, weights_path=imagenet_style_weights, small_input=False)
    torch.testing.assert_close(network.net.conv1.weight, pretrained.mean(dim=1, keepdim=True))


def test_frozen_backbone_trains_only_new_layers(imagenet_style_weights: Path) -> None:
    network = ResNet((1, 8, 8), 4, weights_path=imagenet_style_weights, freeze_backbone=True)
    trainable = {name for name, p in network.named_parameters() if p.requires_grad}
    # The head is new, and so is the small-input stem: both train; everything pretrained is frozen.
    assert trainable == {"net.conv1.weight", "net.fc.weight", "net.fc.bias"}


def test_pretrained_weights_keep_their_stem_unless_asked(imagenet_style_weights: Path) -> None:
    pretrained = torch.load(imagenet_style_weights, weights_only=True)["conv1.weight"]
    network = ResNet((3, 32, 32), 4, weights_path=imagenet_style_weights)
    torch.testing.assert_close(network.net.conv1.weight, pretrained)
    assert isinstance(network.net.maxpool, torch.nn.MaxPool2d)
    asked = ResNet((3, 32, 32), 4, weights_path=imagenet_style_weights, small_input=True)
    assert asked.net.conv1.kernel_size == (3, 3)
    assert ResNet((3, 32, 32), 4).net.conv1.kernel_size == (3, 3)  # from scratch: small stem


def test_a_frozen_backbone_keeps_its_batchnorm_statistics(imagenet_style_weights: Path) -> None:
    network = ResNet((3, 16, 16), 4, weights_path=imagenet_style_weights, freeze_backbone=True)
    network.train()
    before = {k: v.clone() for k, v in network.state_dict().items() if "running" in k}
    network(torch.randn(4, 3, 16, 16))
    after = network.state_dict()
    assert before and all(torch.equal(after[k], v) for k, v in before.items())
    assert network.training and network.net.fc.training


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "not_a_resnet.pt"
    torch.save(SmallCNN((3, 32, 32), 10).state_dict(), path)
    with pytest.raises(ValueError, match="does not hold resnet18 weights"):
        ResNet((3, 32, 32), 4, weights_path=path)


def test_channels_last_switch_changes_the_layout_not_the_result() -> None:
    torch.manual_seed(0)
    plain = Classifier(SmallCNN, num_classes=4, input_shape=(3, 16, 16)).eval()
    nhwc = Classifier(SmallCNN, num_classes=4, input_shape=(3, 16, 16), channels_last=True)
    nhwc.load_state_dict(plain.state_dict())
    conv = nhwc.eval().network.features[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    pixels = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)  # as the loaders send them
    torch.testing.assert_close(nhwc(pixels), plain(pixels))
