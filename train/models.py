"""The two architectures and the training-only augmentation.

Every model takes uint8-range pixels (NHWC, float32 0..255) and begins with
``Rescaling(1/255)``, so a full-integer TFLite export gets input scale 1 and
can be fed raw pixels. Augmentation wraps the model for training only and is
never part of the saved or exported graph.
"""
from __future__ import annotations

import keras
from keras import layers


def build_seed(size=(48, 48), channels=1) -> keras.Model:
    """The classic of the seed projects: Conv2D 16, MaxPool, Conv2D 32,
    MaxPool, Conv2D 16, MaxPool, Flatten, Dense 256 ReLU, Dense 1 sigmoid
    (3x3 kernels, stride 1, valid padding, ReLU)."""
    return keras.Sequential([
        keras.Input((*size, channels), name="image"),
        layers.Rescaling(1 / 255.0),
        layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(256, activation="relu"),
        layers.Dense(1, activation="sigmoid"),
    ], name="seed")


def _conv_bn_relu(x, filters, separable=False):
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(filters, 3, padding="same", use_bias=False)(x)
    # momentum 0.9 (PyTorch's default) lets the moving statistics settle within
    # a few hundred steps, so short runs on small folders evaluate well too.
    x = layers.BatchNormalization(momentum=0.9)(x)  # folded into the conv at export
    return layers.ReLU()(x)


def build_compact(size=(48, 48), channels=1) -> keras.Model:
    """The default: a compact CNN for 48x48 faces, cheap on a Raspberry Pi.

    Four stages at 48, 24, 12 and 6 pixels with 24, 48, 96 and 128 channels;
    full 3x3 convolutions where channels are few, depthwise-separable ones
    where they are many; BatchNorm after each convolution (folded into it
    by the TFLite converter), global average pooling, dropout, one sigmoid
    unit. About 190k parameters and 18.5M multiply-accumulates per 48x48
    gray image; built only from ops int8 TFLite (XNNPACK) and ONNX Runtime
    run well.
    """
    inp = keras.Input((*size, channels), name="image")
    x = layers.Rescaling(1 / 255.0)(inp)
    x = _conv_bn_relu(x, 24)
    x = layers.MaxPooling2D()(x)
    x = _conv_bn_relu(x, 48)
    x = layers.MaxPooling2D()(x)
    x = _conv_bn_relu(x, 96)
    x = _conv_bn_relu(x, 96, separable=True)
    x = layers.MaxPooling2D()(x)
    x = _conv_bn_relu(x, 128)
    x = _conv_bn_relu(x, 128, separable=True)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    out = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inp, out, name="compact")


def build_model(arch: str, size=(48, 48), channels=1) -> keras.Model:
    """Build an untrained model by name (one of :data:`train.ARCHS`)."""
    return {"compact": build_compact, "seed": build_seed}[arch](size, channels)


def augmentation(seed: int = 0) -> keras.Sequential:
    """Random flip, rotation (±18°), shift (±8%), zoom (±10%), brightness and
    contrast (±15%), on 0..255 pixels. Active only while training."""
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(0.05, seed=seed + 1),
        layers.RandomTranslation(0.08, 0.08, seed=seed + 2),
        layers.RandomZoom(0.1, seed=seed + 3),
        layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 4),
        layers.RandomContrast(0.15, value_range=(0, 255), seed=seed + 5),
    ], name="augmentation")


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates for one image, from the layer shapes.

    Counts Conv2D (out H·W·C_out·k_h·k_w·C_in), SeparableConv2D (depthwise
    H·W·C_in·k_h·k_w plus pointwise H·W·C_in·C_out), DepthwiseConv2D and
    Dense; pooling, BatchNorm and activations are ignored (a few percent at
    most).
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        out = layer.output.shape
        if isinstance(layer, layers.SeparableConv2D):
            cin = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * cin * (kh * kw + out[3])
        elif isinstance(layer, layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw
        elif isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)
