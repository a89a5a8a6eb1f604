"""The architecture is the user's SimpleCNN, layer for layer."""
import torch
from torch import nn

from model.network import NUM_CLASSES, SimpleCNN


def test_module_names_and_types():
    model = SimpleCNN()
    expected = {"conv1": nn.Conv2d, "conv2": nn.Conv2d, "conv3": nn.Conv2d, "bn": nn.BatchNorm2d,
                "pool": nn.MaxPool2d, "dropout": nn.Dropout, "fc1": nn.Linear, "fc2": nn.Linear, "fc3": nn.Linear}
    assert {n: type(m) for n, m in model.named_children()} == expected


def test_layer_hyperparameters():
    m = SimpleCNN()
    for conv, (cin, cout) in zip((m.conv1, m.conv2, m.conv3), ((3, 64), (64, 128), (128, 256))):
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (cin, cout, (3, 3), (1, 1))
    assert m.bn.num_features == 256
    assert (m.pool.kernel_size, m.pool.stride) == (2, 2)
    assert m.dropout.p == 0.25
    assert [(f.in_features, f.out_features) for f in (m.fc1, m.fc2, m.fc3)] == [(4096, 512), (512, 256), (256, NUM_CLASSES)]


def test_intermediate_shapes():
    m = SimpleCNN().eval()
    x = torch.zeros(2, 3, 32, 32)
    x = m.pool(torch.relu(m.conv1(x)))
    assert x.shape == (2, 64, 16, 16)
    x = m.pool(torch.relu(m.conv2(x)))
    assert x.shape == (2, 128, 8, 8)
    x = m.pool(torch.relu(m.bn(m.conv3(x))))
    assert x.shape == (2, 256, 4, 4)
    assert torch.flatten(x, 1).shape == (2, 4096)


def test_parameter_count_matches_the_layers():
    m = SimpleCNN()
    conv = sum(k * k * cin * cout + cout for k, cin, cout in ((3, 3, 64), (3, 64, 128), (3, 128, 256)))
    bn = 2 * 256
    fc = sum(i * o + o for i, o in ((4096, 512), (512, 256), (256, NUM_CLASSES)))
    assert sum(p.numel() for p in m.parameters()) == conv + bn + fc == 2_626_020


def test_output_shape_and_eval_is_deterministic():
    m = SimpleCNN().eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.inference_mode():
        a, b = m(x), m(x)
    assert a.shape == (5, NUM_CLASSES)
    assert torch.equal(a, b)  # dropout is off in eval mode
