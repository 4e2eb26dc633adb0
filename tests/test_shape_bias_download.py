"""Downloads and the cue-conflict layout check, without the internet: an unreachable local
port for the offline message, file:// URLs and tiny generated archives for the rest."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from selfsup_vis.cli import download_cue_conflict as download_cli
from selfsup_vis.data.cue_conflict import (
    CueConflictLayoutError,
    check_cue_conflict_layout,
    list_cue_conflict,
)
from selfsup_vis.data.cue_conflict_categories import CATEGORIES
from selfsup_vis.shape_bias import download as dl

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
OFFLINE = "http://127.0.0.1:9"  # discard port: nothing listens, the connection is refused


def test_offline_message_names_url_and_destination(tmp_path):
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch_csvs(tmp_path / "csvs", base_url=OFFLINE, timeout=5)
    msg = str(err.value)
    assert "127.0.0.1:9" in msg and "offline" in msg and str(tmp_path / "csvs") in msg
    assert not any((tmp_path / "csvs").glob("*"))  # nothing half-written
    with pytest.raises(dl.DownloadError, match="could not fetch the cue-conflict stimuli"):
        dl.fetch_cue_conflict(tmp_path / "cc", urls=[f"{OFFLINE}/cue-conflict.tar.gz"], timeout=5)
    assert not (tmp_path / "cc").exists()


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data missing")
def test_csvs_and_icons_from_local_mirror_are_checksummed(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(DATA / "model-vs-human" / "raw-data", mirror / "raw-data")
    shutil.copytree(DATA / "model-vs-human" / "icons", mirror / "assets" / "icons")
    out = dl.fetch_csvs(tmp_path / "csvs", base_url=mirror.as_uri())
    assert sorted(p.name for p in out.glob("*.csv")) == sorted(dl.HUMAN_CSVS | dl.MODEL_CSVS)
    icons = dl.fetch_icons(tmp_path / "icons", base_url=mirror.as_uri())
    assert sorted(p.stem for p in icons.glob("*.png")) == sorted(CATEGORIES)
    # a tampered file is refused and not saved
    bad = mirror / "assets" / "icons" / "cat.png"
    bad.write_bytes(b"not the icon")
    with pytest.raises(dl.DownloadError, match="sha256"):
        dl.fetch_icons(tmp_path / "icons2", base_url=mirror.as_uri())
    assert not (tmp_path / "icons2" / "cat.png").exists()
    assert not list((tmp_path / "icons2").glob(".*part"))


def _fake_stimuli(root: Path, per_category: int = 80) -> None:
    img = Image.new("RGB", (2, 2))
    for i, cat in enumerate(CATEGORIES):
        (root / cat).mkdir(parents=True)
        texture = CATEGORIES[(i + 1) % len(CATEGORIES)]
        for n in range(per_category):
            img.save(root / cat / f"{cat}{n + 1}-{texture}1.png")


def test_stimuli_archive_is_unpacked_checked_and_moved(tmp_path):
    src = tmp_path / "src" / "cue-conflict"
    _fake_stimuli(src)
    archive = tmp_path / "cue-conflict.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="cue-conflict")
    dest = dl.fetch_cue_conflict(tmp_path / "data" / "cue-conflict",
                                 urls=[f"{OFFLINE}/x.tar.gz", archive.as_uri()])
    assert len(list_cue_conflict(dest)) == 1280
    # an incomplete archive never lands at dest
    shutil.rmtree(src / "truck")
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="cue-conflict")
    with pytest.raises(dl.DownloadError, match="no folder with the 16 category folders"):
        dl.fetch_cue_conflict(tmp_path / "other", urls=[archive.as_uri()])
    assert not (tmp_path / "other").exists()


@pytest.mark.skipif(not (DATA / "cue-conflict").is_dir(), reason="shared data missing")
def test_real_cue_conflict_layout_passes():
    paths = check_cue_conflict_layout(DATA / "cue-conflict")
    assert len(paths) == 1280 and len({p.parent.name for p in paths}) == 16


def test_incomplete_cue_conflict_folder_lists_missing_and_extra(tmp_path):
    _fake_stimuli(tmp_path, per_category=80)
    shutil.rmtree(tmp_path / "oven")
    (tmp_path / "bear" / "bear1-bicycle1.png").unlink()
    (tmp_path / "bear" / "notes.txt").write_text("x")
    (tmp_path / "cat" / "photo.png").write_bytes(b"")
    (tmp_path / "zebra").mkdir()
    with pytest.raises(CueConflictLayoutError) as err:
        list_cue_conflict(tmp_path)
    msg = str(err.value)
    assert "missing category folder(s): ['oven']" in msg
    assert "unexpected folder(s): ['zebra']" in msg
    assert "bear/: 79 PNGs, expected 80 (1 missing)" in msg
    assert "bear/: not PNG image(s): notes.txt" in msg
    assert "cat/: 81 PNGs, expected 80 (1 extra)" in msg and "photo.png" in msg
    with pytest.raises(CueConflictLayoutError, match="does not exist"):
        list_cue_conflict(tmp_path / "nowhere")


def test_download_script_offline_exits_with_message(tmp_path, capsys):
    code = download_cli.main(["--what", "icons", "--dest", str(tmp_path / "icons"),
                        "--base-url", OFFLINE, "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 1 and "offline" in err and "Traceback" not in err
