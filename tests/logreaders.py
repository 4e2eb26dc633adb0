"""Read back what the real loggers wrote: TensorBoard event files and W&B offline runs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def tensorboard_tags(log_dir: Path) -> dict[str, list[str]]:
    """Scalar and image tags found in the event files under ``log_dir``."""
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    return {"scalars": list(tags["scalars"]), "images": list(tags["images"])}


def wandb_history(run_dir: Path) -> list[dict]:
    """History rows of the offline W&B run under ``run_dir`` (LevelDB-log framed protobufs)."""
    return [
        {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
        for record in wandb_records(run_dir)
        if record.WhichOneof("record_type") == "history"
    ]


def _wandb_updates(run_dir: Path, kind: str) -> dict:
    """The merged ``config`` or ``summary`` updates of the offline W&B run under ``run_dir``."""
    out: dict = {}
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == kind:
            for i in getattr(record, kind).update:
                out[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return out


def wandb_config(run_dir: Path) -> dict:
    """The run config (``wandb.config``) the offline W&B run recorded."""
    return _wandb_updates(run_dir, "config")


def wandb_summary(run_dir: Path) -> dict:
    """The run summary (``wandb.run.summary``) the offline W&B run recorded."""
    return _wandb_updates(run_dir, "summary")


def tensorboard_hparams(log_dir: Path) -> tuple[dict, list[str]]:
    """``(hparams, metric tags)`` of the HPARAMS plugin data in the event files under ``log_dir``."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    hparams: dict = {}
    metrics: list[str] = []
    for content in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for key, value in data.session_start_info.hparams.items():
                hparams[key] = getattr(value, value.WhichOneof("kind"))
        if data.HasField("experiment"):
            metrics += [m.name.tag for m in data.experiment.metric_infos]
    return hparams, metrics


def wandb_records(run_dir: Path):
    """Every record of the offline W&B run under ``run_dir`` (LevelDB-log framed protobufs)."""
    (path,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    yield from wandb_file_records(path)


def wandb_file_records(path: Path):
    """Every record of one W&B run file (``run-<id>.wandb``): a resumed run has one per attempt."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"not a W&B run file: {path}"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, rtype = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if rtype == 0:
            continue
        pending = chunk if rtype in (1, 2) else pending + chunk
        if rtype in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
