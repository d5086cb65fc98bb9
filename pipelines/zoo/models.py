"""Builders of the zoo's networks: small, Ethos-U friendly, each a Functional tf_keras model.

Every builder takes `input_shape` and `num_classes` and returns an untrained model whose last
layer outputs logits (no softmax), except `mobilenet_v1`, which is tf_keras.applications'
MobileNet as it comes (softmax head).
"""
from __future__ import annotations

from collabopt.components.core.keras_compat import keras

layers = keras.layers

# BatchNormalization's moving statistics follow the batches faster than Keras' default (0.99):
# these models train for a few hundred steps on a few thousand examples, and with 0.99 the
# statistics used at inference lag far behind the weights (DS-CNN reached 0.49 eval accuracy at
# 1.00 train accuracy).
BN_MOMENTUM = 0.9


def ds_cnn(input_shape=(49, 10, 1), num_classes: int = 10, filters: int = 64,
           blocks: int = 4, bn_momentum: float = BN_MOMENTUM) -> keras.Model:
    """DS-CNN for keyword spotting (Zhang et al., "Hello Edge", the small variant): a strided
    Conv2D, then `blocks` depthwise-separable blocks (DepthwiseConv2D 3x3 -> BatchNorm -> ReLU ->
    Conv2D 1x1 -> BatchNorm -> ReLU), global average pooling and a Dense head."""
    inputs = keras.Input(shape=input_shape, name="features")
    x = layers.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", use_bias=False,
                      name="conv1")(inputs)
    x = layers.BatchNormalization(momentum=bn_momentum, name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    for i in range(1, blocks + 1):
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"dw{i}_bn")(x)
        x = layers.ReLU(name=f"dw{i}_relu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"pw{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"pw{i}_bn")(x)
        x = layers.ReLU(name=f"pw{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="ds_cnn")


def mobilenet_v1(input_shape=(32, 32, 3), num_classes: int = 10,
                 alpha: float = 0.25) -> keras.Model:
    """MobileNetV1 (tf_keras.applications.MobileNet, random weights: nothing is downloaded),
    with BN_MOMENTUM in its BatchNormalization layers."""
    model = keras.applications.MobileNet(input_shape=tuple(input_shape), alpha=alpha,
                                         weights=None, classes=num_classes)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return model


def cnn_1d(input_shape=(128, 1), num_classes: int = 8) -> keras.Model:
    """A 1-D CNN as used on sensor or audio signals: Conv1D / MaxPooling1D twice, Flatten,
    Dense."""
    inputs = keras.Input(shape=input_shape, name="signal")
    x = layers.Conv1D(16, 7, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling1D(2, name="pool1")(x)
    x = layers.Conv1D(32, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling1D(4, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="dense1")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn_1d")


def _conv_bn(x, filters: int, kernel: int, strides: int, name: str, relu: bool = True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=name)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def resnet(input_shape=(8, 8, 1), num_classes: int = 10, filters: int = 16) -> keras.Model:
    """A small residual network: a stem, one identity block and one strided block with a 1x1
    projection shortcut (each ending in Add -> ReLU), global average pooling, Dense."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, filters, 3, 1, "stem")
    y = _conv_bn(x, filters, 3, 1, "block1_conv1")
    y = _conv_bn(y, filters, 3, 1, "block1_conv2", relu=False)
    x = layers.ReLU(name="block1_out")(layers.Add(name="block1_add")([x, y]))
    y = _conv_bn(x, 2 * filters, 3, 2, "block2_conv1")
    y = _conv_bn(y, 2 * filters, 3, 1, "block2_conv2", relu=False)
    shortcut = _conv_bn(x, 2 * filters, 1, 2, "block2_shortcut", relu=False)
    x = layers.ReLU(name="block2_out")(layers.Add(name="block2_add")([shortcut, y]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet")


def mlp(input_shape=(64,), num_classes: int = 10) -> keras.Model:
    """A multi-layer perceptron on flat features: Dense 64 -> 32 -> classes."""
    inputs = keras.Input(shape=input_shape, name="features")
    x = layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    x = layers.Dense(64, activation="relu", name="dense1")(x)
    x = layers.Dense(32, activation="relu", name="dense2")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mlp")


__all__ = ["ds_cnn", "mobilenet_v1", "cnn_1d", "resnet", "mlp"]
