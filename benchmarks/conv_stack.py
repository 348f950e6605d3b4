"""Compare frameworks on the part of a CW-VAE step that dominates it: the conv stack.

Times forward + backward of the CW-VAE conv encoder (4 convs, 4x4, stride 2) and
decoder (dense + 4 transposed convs) on ``--frames`` 64x64 frames, in PyTorch
(cwworld's modules) or in TensorFlow/Keras (the same layers as the official
CW-VAE code). TensorFlow is not a cwworld dependency: install it yourself to
run ``--impl tf``.

    python benchmarks/conv_stack.py --impl torch --frames 1600   # B=16 x T=100
    python benchmarks/conv_stack.py --impl tf --frames 1600
"""

from __future__ import annotations

import argparse
import statistics
import time


def time_torch(frames: int, channels: int, repeats: int) -> list[float]:
    import torch

    from cwworld.nn.conv import ConvDecoder, ConvEncoder
    from cwworld.utils import keep_freed_memory

    keep_freed_memory()
    encoder, decoder = ConvEncoder(channels, 32), ConvDecoder(220, channels, 32)
    x = torch.rand(frames, 64, 64, channels).permute(0, 3, 1, 2)  # channels-last memory
    features = torch.randn(frames, 220)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        loss = encoder(x).sum() + (decoder(features) - x).square().sum()
        loss.backward()
        times.append(time.perf_counter() - t)
    return times[1:]


def time_tf(frames: int, channels: int, repeats: int) -> list[float]:
    import tensorflow as tf

    layers = tf.keras.layers
    act = tf.nn.leaky_relu
    encoder = tf.keras.Sequential(
        [tf.keras.Input((64, 64, channels))]
        + [layers.Conv2D(32 * m, 4, 2, activation=act) for m in (1, 2, 4, 8)]
        + [layers.Flatten()]
    )
    decoder = tf.keras.Sequential([
        tf.keras.Input((220,)), layers.Dense(1024), layers.Reshape((1, 1, 1024)),
        layers.Conv2DTranspose(128, 5, 2, activation=act), layers.Conv2DTranspose(64, 5, 2, activation=act),
        layers.Conv2DTranspose(32, 6, 2, activation=act), layers.Conv2DTranspose(channels, 6, 2),
    ])
    x = tf.random.uniform((frames, 64, 64, channels))
    features = tf.random.normal((frames, 220))
    variables = encoder.trainable_variables + decoder.trainable_variables

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(encoder(x)) + tf.reduce_sum(tf.square(decoder(features) - x))
        return tape.gradient(loss, variables)

    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        grads = step()
        grads[0].numpy()
        times.append(time.perf_counter() - t)
    return times[1:]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=["torch", "tf"], default="torch")
    parser.add_argument("--frames", type=int, default=1600)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    times = (time_torch if args.impl == "torch" else time_tf)(args.frames, args.channels, args.repeats)
    print(f"| impl | frames | fwd+bwd s (min) | median | max |\n|---|---|---|---|---|\n"
          f"| {args.impl} | {args.frames} | {min(times):.2f} | {statistics.median(times):.2f} | {max(times):.2f} |")


if __name__ == "__main__":
    main()
