"""The four architectures: shapes on every supported input, trainability, seeded determinism,
init statistics, config errors, and batched (vmap) == looped forwards."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from ddm.errors import ConfigError
from ddm.models import INIT_SCHEMES, MODELS, Classifier, build_model

ARCHS = ("convnet", "alexnet", "resnet18_ap", "simple_vit")
IN_SHAPES = ((1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64))
SMALL_WIDTH = 16  # keeps every case fast on one CPU core
NUM_CLASSES = 5


def random_batches(in_shape, count=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, *in_shape, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    return images, labels


def test_registry_holds_exactly_the_four_architectures():
    assert sorted(MODELS.names()) == sorted(ARCHS)
    assert INIT_SCHEMES == ("kaiming", "normal", "xavier")


@pytest.mark.parametrize("in_shape", IN_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_one_epoch_of_sgd_changes_weights(arch, in_shape):
    model = build_model(arch, in_shape, NUM_CLASSES, width=SMALL_WIDTH)
    assert isinstance(model, Classifier)
    images, labels = random_batches(in_shape)
    assert model(images).shape == (16, NUM_CLASSES)
    features = model.embed(images)
    assert features.shape == (16, model.embed_dim)
    # Guards against pooling to 1x1 before an instance norm, which makes features constant.
    # (Such features vary across inputs only by rounding noise, ~1e-5; healthy ones by > 0.05.)
    assert features.std(dim=0).max() > 1e-2
    # No BatchNorm or other running buffers: the saved state is exactly the parameters.
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}

    before = [param.detach().clone() for param in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for batch in range(2):
        chunk = slice(8 * batch, 8 * (batch + 1))
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images[chunk]), labels[chunk])
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    after = list(model.parameters())
    changed = [not torch.equal(old, new) for old, new in zip(before, after, strict=True)]
    # Not just the head: gradients must reach the first layer.
    assert changed[0] and changed[-1]


@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_same_weights_and_global_rng_untouched(arch):
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    first = build_model(arch, (3, 32, 32), NUM_CLASSES, width=SMALL_WIDTH, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before)
    second = build_model(arch, (3, 32, 32), NUM_CLASSES, width=SMALL_WIDTH, seed=7)
    other = build_model(arch, (3, 32, 32), NUM_CLASSES, width=SMALL_WIDTH, seed=8)
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[key], second_state[key]) for key in first_state)
    assert any(not torch.equal(first_state[key], tensor)
               for key, tensor in other.state_dict().items())


def _expected_std(scheme, weight):
    fan_in = weight[0].numel()
    fan_out = weight.shape[0] * weight[0, 0].numel()
    return {"kaiming": math.sqrt(2 / fan_in), "normal": 0.02,
            "xavier": math.sqrt(2 / (fan_in + fan_out))}[scheme]


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_init_scheme_weight_statistics(scheme):
    model = build_model("convnet", (3, 32, 32), 10, width=64, init=scheme)
    hidden_conv = model.features[1][0]  # 64 -> 64 channels: 36,864 weights
    for layer in (hidden_conv, model.head):
        assert layer.weight.std().item() == pytest.approx(_expected_std(scheme, layer.weight),
                                                          rel=0.05)
        assert layer.weight.mean().abs().item() < 0.1 * layer.weight.std().item()
        assert torch.count_nonzero(layer.bias) == 0
    norm = model.features[0][1]
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    assert torch.count_nonzero(norm.bias) == 0


def test_kaiming_and_xavier_differ_on_hidden_convs():
    # A 64 -> 64 3x3 conv: kaiming std sqrt(2/576), xavier sqrt(2/1152), a factor sqrt(2).
    stds = {scheme: build_model("convnet", (3, 32, 32), 10, width=64, init=scheme)
            .features[1][0].weight.std().item() for scheme in ("kaiming", "xavier")}
    assert stds["kaiming"] / stds["xavier"] == pytest.approx(math.sqrt(2), rel=0.05)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_initializes_every_parameter_from_the_seed(arch):
    # Default PyTorch init would make schemes indistinguishable from each other on some layer.
    normal = build_model(arch, (1, 28, 28), NUM_CLASSES, width=SMALL_WIDTH, init="normal")
    for name, param in normal.named_parameters():
        if name.endswith("weight") and param.dim() >= 2:
            assert param.std().item() == pytest.approx(0.02, rel=0.3), name


def test_unknown_arch_and_init_list_the_choices():
    with pytest.raises(ConfigError, match="convnet.*simple_vit|simple_vit.*convnet"):
        build_model("vgg", (3, 32, 32), 10)
    with pytest.raises(ConfigError, match="kaiming, normal, xavier"):
        build_model("convnet", (3, 32, 32), 10, init="orthogonal")


@pytest.mark.parametrize("arch", ["alexnet", "resnet18_ap"])
def test_fixed_depth_architectures_refuse_a_depth(arch):
    with pytest.raises(ConfigError, match="depth"):
        build_model(arch, (3, 32, 32), 10, depth=3)


def test_depth_and_width_are_validated():
    with pytest.raises(ConfigError, match="divisible"):
        build_model("simple_vit", (3, 32, 32), 10, width=18)
    with pytest.raises(ConfigError, match="depth"):
        build_model("convnet", (3, 32, 32), 10, depth=0)
    with pytest.raises(ConfigError, match="width"):
        build_model("convnet", (3, 32, 32), 10, width=0)


def test_depth_changes_the_number_of_blocks():
    convnet = build_model("convnet", (3, 32, 32), 10, width=SMALL_WIDTH, depth=2)
    vit = build_model("simple_vit", (3, 32, 32), 10, width=SMALL_WIDTH, depth=1)
    assert len(convnet.features) == 2 and len(vit.blocks) == 1
    assert len(build_model("simple_vit", (3, 32, 32), 10, width=SMALL_WIDTH).blocks) == 4


def test_vit_position_embedding_is_a_constant_not_a_parameter():
    model = build_model("simple_vit", (3, 32, 32), 10, width=SMALL_WIDTH)
    assert model.pos_embedding.shape == (64, SMALL_WIDTH)  # 8x8 grid of 4x4 patches
    assert "pos_embedding" not in dict(model.named_parameters())
    assert "pos_embedding" not in model.state_dict()


@pytest.mark.parametrize("arch", ["convnet", "simple_vit"])
def test_vmap_over_stacked_parameters_equals_a_loop(arch):
    copies = [build_model(arch, (3, 32, 32), NUM_CLASSES, width=SMALL_WIDTH, seed=seed)
              for seed in range(3)]
    names = [name for name, _ in copies[0].named_parameters()]
    stacked = {name: torch.stack([dict(copy.named_parameters())[name].detach()
                                  for copy in copies]) for name in names}
    images, _ = random_batches((3, 32, 32), count=4)

    def logits(params):
        return functional_call(copies[0], params, (images,))

    batched = vmap(logits)(stacked)
    with torch.no_grad():
        looped = torch.stack([copy(images) for copy in copies])
    assert batched.shape == (3, 4, NUM_CLASSES)
    assert not torch.allclose(looped[0], looped[1])  # the copies really differ
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=0)
