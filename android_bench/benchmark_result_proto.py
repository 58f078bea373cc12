"""Decode the `BenchmarkResult` protobuf that LiteRT 2.x `benchmark_model --result_file_path=F` writes.

The message is `tflite.tools.benchmark.BenchmarkResult` of
`tflite/tools/benchmark/proto/benchmark_result.proto` in google-ai-edge/LiteRT
(a verbatim copy is `android_bench/proto/benchmark_result.proto`); the writer
is `BenchmarkLoggingListener::OnBenchmarkEnd` in
`litert/tools/benchmark_litert_model.h` (`result.SerializeToOstream`).

No generated `_pb2` module and no `protoc` are needed: the descriptor is built
here with the protobuf runtime's descriptor API (`descriptor_pb2`,
`descriptor_pool`, `message_factory`), field for field from that `.proto`
(tests compare it with `protoc --descriptor_set_out` of the copied file when
protoc is installed).

Example:

>>> message = benchmark_result_message_class()()
>>> message.latency_metrics.avg_ms = 1.5
>>> message.misc_metrics.num_runs = 50
>>> decoded = parse_benchmark_result_proto(message.SerializeToString())
>>> decoded["latency_metrics"]["avg_ms"], decoded["misc_metrics"]["num_runs"]
(1.5, 50)
>>> decoded["memory_metrics"]
{}
"""

from __future__ import annotations

import functools
from typing import Any

PROTO_PACKAGE = "tflite.tools.benchmark"
PROTO_FILE = "tflite/tools/benchmark/proto/benchmark_result.proto"

# (message, [(field name, number, type)]) exactly as in benchmark_result.proto (proto2, all optional).
_MESSAGES = (
    ("LatencyMetrics", [
        ("avg_ms", 1, "float"), ("min_ms", 2, "float"), ("max_ms", 3, "float"), ("stddev_ms", 4, "float"),
        ("median_ms", 5, "float"), ("p5_ms", 6, "float"), ("p95_ms", 7, "float"), ("init_ms", 8, "float"),
        ("first_inference_ms", 9, "float"), ("average_warm_up_ms", 10, "float"),
    ]),
    ("MemoryMetrics", [
        ("init_footprint_kb", 1, "int64"), ("overall_footprint_kb", 2, "int64"), ("peak_mem_mb", 3, "float"),
    ]),
    ("MiscMetrics", [
        ("model_size_mb", 1, "float"), ("num_runs", 2, "int32"), ("num_warmup_runs", 3, "int32"),
        ("model_throughput_in_mb_per_sec", 4, "float"),
    ]),
    ("BenchmarkResult", [
        ("name", 1, "string"), ("latency_metrics", 2, "LatencyMetrics"), ("memory_metrics", 3, "MemoryMetrics"),
        ("misc_metrics", 4, "MiscMetrics"),
    ]),
)


def file_descriptor_proto():
    """The `FileDescriptorProto` of benchmark_result.proto, built field by field."""
    from google.protobuf import descriptor_pb2

    scalar = {
        "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
        "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    }
    proto = descriptor_pb2.FileDescriptorProto(name=PROTO_FILE, package=PROTO_PACKAGE)  # proto2: no syntax field
    proto.options.java_multiple_files = True
    proto.options.java_package = PROTO_PACKAGE
    for message_name, fields in _MESSAGES:
        message = proto.message_type.add(name=message_name)
        for name, number, kind in fields:
            field = message.field.add(name=name, number=number, json_name=_json_name(name),
                                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            if kind in scalar:
                field.type = scalar[kind]
            else:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                field.type_name = f".{PROTO_PACKAGE}.{kind}"
    return proto


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@functools.lru_cache(maxsize=1)
def benchmark_result_message_class():
    """The message class of `tflite.tools.benchmark.BenchmarkResult` (own descriptor pool)."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor_proto())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PROTO_PACKAGE}.BenchmarkResult"))


def parse_benchmark_result_proto(data: bytes) -> dict[str, Any]:
    """Decode serialized `BenchmarkResult` bytes into a dict of the fields that are set.

    Keys: `name` (when set) and `latency_metrics`, `memory_metrics`,
    `misc_metrics`, each a dict holding only the fields present in the bytes
    (proto2 presence: a field the tool did not write is absent, never 0).
    Floats are the proto's 32-bit values widened to Python floats.
    Raises ValueError for bytes that are not a BenchmarkResult or hold no
    latency metrics.
    """
    from google.protobuf.message import DecodeError

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"BenchmarkResult proto must be bytes; got {type(data).__name__}")
    message = benchmark_result_message_class()()
    try:
        message.ParseFromString(bytes(data))
    except DecodeError as error:
        raise ValueError(f"not a BenchmarkResult protobuf: {error}") from None
    out: dict[str, Any] = {}
    if message.HasField("name"):
        out["name"] = message.name
    for group in ("latency_metrics", "memory_metrics", "misc_metrics"):
        sub = getattr(message, group)
        out[group] = {field.name: value for field, value in sub.ListFields()}
    if not out["latency_metrics"]:
        raise ValueError("BenchmarkResult protobuf holds no latency metrics (empty or not a benchmark result file)")
    return out
