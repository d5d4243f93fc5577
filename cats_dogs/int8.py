"""Post-training INT8 of an OpenVINO model in seconds: the model NNCF's MinMax quantization makes, without NNCF.

    int8_model = minmax_int8(fp32_model, photos)      # photos: N×3×S×S, preprocessed as in training

NNCF (CALIBRATION_BATCH photos a batch, no bias correction) took 15–21 s for a ResNet50 at 256² on 2 cores, about 7 s
of it fixed (matching its patterns, compiling its statistics model), whatever the photos: more than 5% of a short
train.py run, which then had to leave INT8 to a background process. This module writes the same layout in 2.5 s
(AVX-512) to 3.6 s (AVX2) for 32 photos (4.9 and 6.8 s for 64), most of it one fp32 pass over them
(docs/speed.md, "A quantizer of its own"):
- FakeQuantize (256 levels) on each activation that a convolution, a matmul or the global average pool reads (found
  through max pooling and reshapes, which commute with it), and on both inputs of each residual addition: NNCF's
  71 places in a ResNet50;
- each one's range from the calibration photos, as NNCF's MinMax with its mean aggregator computes it: the mean over
  batches of each batch's largest value, [0, high] where the activation is never negative, else NNCF's symmetric
  signed range [-high·128/127, high] with `high` the mean of each batch's largest absolute value;
- weights of convolutions and matmuls as int8 per output channel, symmetric (scale = largest |w| / 127), 7 bits for
  the first convolution (NNCF's overflow fix: AVX2's 8-bit multiply-adds would saturate on the photo's pixels).
OpenVINO's CPU plugin turns that into int8 kernels when it compiles the model. Against NNCF's model calibrated on the
same photos: the same ranges (to the bit where unsigned), the same speed, the same verdicts on the INT8 check.
nncf_int8 stays as the reference the benchmarks and studies compare against.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch

CALIBRATION_BATCH = 8
BIAS_CORRECTION = False  # NNCF's fast bias correction compiled a sub-model per layer: 41 s against 10 s, same verdicts
COMMUTES_WITH_QUANTIZING = {"MaxPool", "Reshape"}  # a quantized input gives the same values through these
READS_QUANTIZED = {"Convolution", "MatMul", "ReduceMean"}
SIGNED_LOW = -128 / 127  # NNCF's signed symmetric range: [-high·128/127, high]
FIRST_CONV_LEVELS = 63.5  # 7-bit weights for the first convolution (NNCF's overflow fix), 127 elsewhere


def quantized_activations(model) -> list:
    """The outputs to quantize: each activation read by a convolution, a matmul or a global pool (traced back through
    max pooling and reshapes), and both inputs of each addition of two activations (a residual connection)."""
    found = {}

    def add(output) -> None:
        while output.get_node().get_type_name() in COMMUTES_WITH_QUANTIZING:
            output = output.get_node().input_value(0)
        if output.get_node().get_type_name() != "Constant":
            found[(output.get_node().get_friendly_name(), output.get_index())] = output

    for op in model.get_ordered_ops():
        kind, inputs = op.get_type_name(), op.input_values()
        if kind in READS_QUANTIZED:
            add(inputs[0])
        elif kind == "Add" and not any(value.get_node().get_type_name() == "Constant" for value in inputs):
            for value in inputs:
                add(value)
    return list(found.values())


def activation_ranges(model, activations: list, photos: torch.Tensor, batch: int) -> list[tuple[float, float]]:
    """Each activation's (low, high) over the photos, in batches of `batch`: the model compiled once with each
    activation's minimum and maximum per batch as extra outputs (reduced inside, so no activation is copied out)."""
    import openvino
    import openvino.opset13 as ops

    extremes = []
    for output in activations:
        axes = ops.constant(np.arange(len(output.get_partial_shape()), dtype=np.int64))
        extremes += [ops.result(ops.reduce_min(output, axes)), ops.result(ops.reduce_max(output, axes))]
    compiled = openvino.Core().compile_model(openvino.Model(extremes, model.get_parameters()), "CPU",
                                             {"INFERENCE_PRECISION_HINT": "f32"})
    request, per_batch = compiled.create_infer_request(), []
    for start in range(0, len(photos), batch):
        request.infer({0: photos[start:start + batch].float().contiguous().numpy()})
        per_batch.append([float(request.get_output_tensor(k).data) for k in range(len(extremes))])
    lows, highs = np.array(per_batch)[:, 0::2], np.array(per_batch)[:, 1::2]
    signed = lows.min(0) < 0
    high = np.where(signed, np.maximum(-lows, highs).mean(0), highs.mean(0))
    return [(SIGNED_LOW * h if s else 0.0, h) for s, h in zip(signed.tolist(), high.tolist(), strict=True)]


def insert_fake_quantize(activations: list, ranges: list[tuple[float, float]]) -> None:
    """A 256-level FakeQuantize after each activation, read by all that read the activation before."""
    import openvino.opset13 as ops

    for output, (low, high) in zip(activations, ranges, strict=True):
        readers = list(output.get_target_inputs())
        low, high = (ops.constant(np.array(value, dtype=np.float32)) for value in (low, high or 1e-8))
        quantized = ops.fake_quantize(output, low, high, low, high, 256)
        for reader in readers:
            reader.replace_source_output(quantized.output(0))


def compress_weights(model) -> None:
    """Convolution and matmul weights as int8 per output channel, multiplied back by their scale where they are read
    (the form NNCF leaves and OpenVINO's CPU plugin turns into int8 kernels)."""
    import openvino
    import openvino.opset13 as ops

    first = True
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "MatMul") or op.input_value(1).get_node().get_type_name() != "Constant":
            continue
        top = FIRST_CONV_LEVELS if first and op.get_type_name() == "Convolution" else 127
        first = False
        weight = op.input_value(1).get_node().get_data().astype(np.float32)
        largest = np.abs(weight).reshape(len(weight), -1).max(1).reshape(-1, *[1] * (weight.ndim - 1))
        scale = (np.where(largest > 0, largest, 1.0) / top).astype(np.float32)
        quantized = np.clip(np.round(weight / scale), -128, 127).astype(np.int8)
        restored = ops.multiply(ops.convert(ops.constant(quantized), openvino.Type.f32), ops.constant(scale))
        op.input(1).replace_source_output(restored.output(0))


def minmax_int8(fp32_model, photos: torch.Tensor, batch: int = CALIBRATION_BATCH) -> Any:
    """An INT8 copy of an OpenVINO model (the model given is left as it was), calibrated on `photos`."""
    model = fp32_model.clone()
    activations = quantized_activations(model)
    ranges = activation_ranges(model, activations, photos, batch)
    insert_fake_quantize(activations, ranges)
    compress_weights(model)
    model.validate_nodes_and_infer_types()
    return model


def nncf_int8(fp32_model, photos: torch.Tensor, batch: int = CALIBRATION_BATCH,
              bias_correction: bool = BIAS_CORRECTION) -> Any:
    """NNCF's post-training INT8 of an OpenVINO model, calibrated on `photos` in batches of `batch`: what minmax_int8
    is measured against (bench/bench_engine_build.py, studies/study_int8_check.py)."""
    import nncf

    batches = [photos[i:i + batch].numpy() for i in range(0, len(photos), batch)]
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars
        return nncf.quantize(fp32_model, nncf.Dataset(batches), subset_size=len(batches),
                             advanced_parameters=nncf.AdvancedQuantizationParameters(
                                 disable_bias_correction=not bias_correction))
