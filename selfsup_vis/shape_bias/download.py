"""Downloads of model-vs-human's public data: human / model CSVs, category icons, stimuli.

Everything is cached (``$SELFSUP_VIS_CACHE/model-vs-human`` or
``~/.cache/selfsup_vis/model-vs-human``), written atomically (temporary name, then
``os.replace``), and checked: files against their published sha256, the stimulus set against
its 16 x 80 layout. Offline, the error says what to download by hand and where to put it.
Nothing here runs unless asked; the tasks work from local directories.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from selfsup_vis.data.cue_conflict import REFERENCE_TREE_DIGEST, list_cue_conflict, tree_digest
from selfsup_vis.data.cue_conflict_categories import CATEGORIES
from selfsup_vis.utils.download import DownloadError
from selfsup_vis.utils.download import cache_root as _cache_root
from selfsup_vis.utils.download import download_file as _download_file

log = logging.getLogger(__name__)

MVH_RAW = "https://raw.githubusercontent.com/bethgelab/model-vs-human/master"
CSV_PATH = "raw-data/cue-conflict"
ICONS_PATH = "assets/icons"
#: The stimuli: model-vs-human's dataset release, then the texture-vs-shape repository.
STIMULI_URLS = (
    "https://github.com/bethgelab/model-vs-human/releases/download/v0.1/cue-conflict.tar.gz",
    "https://github.com/rgeirhos/texture-vs-shape/archive/refs/heads/master.zip",
)
STIMULI_SUBDIR_IN_ZIP = "stimuli/style-transfer-preprocessed-512"

HUMAN_CSVS: dict[str, str] = {
    "cue-conflict_subject-01_session_1.csv": "8e100c7aad0e4ab891cb16a1fea9768edc882f9e47369549d45aa765b0897b1a",
    "cue-conflict_subject-02_session_1.csv": "e9988e3eee0d4f9500fdf626d043e8382e96032a3f791b0d4886807a46e632ad",
    "cue-conflict_subject-03_session_1.csv": "d3907fee2e612e6cd13c316a069f2e5fd41b0a55218b79be9537e1276c507d88",
    "cue-conflict_subject-04_session_1.csv": "1d7b093f1174229a68e3bfac2f68877b2747bac001ad4aadbff5d5f89a44630e",
    "cue-conflict_subject-05_session_1.csv": "f7e69864b7a981f6daaf51d9fc9945b185020e482956b38f477bf8eec9a5fa86",
    "cue-conflict_subject-06_session_1.csv": "b63d7b4c52374a583f5e342aab46de5c445ef314501abc4b36736531c4d5f532",
    "cue-conflict_subject-07_session_1.csv": "75959b12b8ccb9a265e20cb2beef05ac0dbf4052746742dd7e88818e69e2774c",
    "cue-conflict_subject-08_session_1.csv": "b50f6956933c0a20eaf19e846c1fb5896068550da4597e8a7fc30aaf557ea02f",
    "cue-conflict_subject-09_session_1.csv": "c94aba7fb9bf6887ec2fd0f554b145a6ed66c295b26a5c19594e1c0174253878",
    "cue-conflict_subject-10_session_1.csv": "aa7b4f124bf605fd614b704d7556bb1a8088364b3113f9f918257b5cd3925f1b",
}  # fmt: skip
MODEL_CSVS: dict[str, str] = {
    "cue-conflict_resnet50_session-1.csv": "fb4ac7e97caa5a079d29831190f9a7cee577f4eed5a22ab7abbe5e578c139d05",
    "cue-conflict_bagnet33_session-1.csv": "b2959e8a6d7deaf934d1e7c1b9f41aceb1b270b6ea29409c79f88f5e408b541c",
    "cue-conflict_simclr-resnet50x1_session-1.csv": "d85e37e041a9d6b20962a1b4ee4ce06266c548c91ba25e9462efcd7fae19182d",
}  # fmt: skip
ICONS: dict[str, str] = {
    "airplane": "01715105d4fcb726df517dd80f5989dfe7689b6cd2095678a59ec9acaeb4dff2",
    "bear": "f55206fd186e7bd0165c3bc698caa39a7668ad3c8d77077c4286da169debf4d6",
    "bicycle": "7a868c9fdb7c5c9bd3a13006c85dcee3199de1b00b5eb300fcfdb25ffb730745",
    "bird": "9b54be56f1ba5ecec55040ce3e24d3a357590c1e2f3f5ce519c5a441074f0caa",
    "boat": "24033d1769a8afa0e343458dabc382f529c95ec13d306d7ac715946290a9f032",
    "bottle": "70261cd54e1108b7acb07df3c596d3174580ca81852d07ff1ce996a01dd6d9f6",
    "car": "36285c4ff61c51ed3e2da0528e0e719f4284969cb1e77bc52b5a8da1d0fcc092",
    "cat": "ea852ae32aa1b6128bba44a7d85506e0089f3d4bf093cc185e79c376c97f7d87",
    "chair": "6348df75b8fc3b15662ccf50a42f558f41c7ab3d7c158123639252c026719c9d",
    "clock": "66ac97d5e92f8a3016b8b1de1527ff25a3b2f84e75af4d940760d546a322ad8d",
    "dog": "f0bf4d0059ac1380eb3d38974890226791eb740f9325e3b98a3a545c1e85d939",
    "elephant": "87f86fd276e762775c2cf85922ad721107e9b5adc378a131897f2b65f8d6dc8f",
    "keyboard": "6d1305e4e281a306fb7e497285a1901887f93ef35cd2518521e13cd1bfa00f24",
    "knife": "cf19307cbb0f6d6c11053e33068fd624227a2132e5626d04ddcc835c86b05256",
    "oven": "7676e76a05d3d7c23842d6a3f1077881aa0f82f10b7ee4177a6533be4faf0dec",
    "truck": "f179d58011381c42a1e116cf6b83a65ec3a21282d960926f82de0ebbdebfe962",
}  # fmt: skip


def cache_root() -> Path:
    """``$SELFSUP_VIS_CACHE/model-vs-human`` or ``~/.cache/selfsup_vis/model-vs-human``."""
    return _cache_root("model-vs-human")


def download_file(url: str, dest: str | Path, sha256: str | None = None,
                  timeout: float = 30.0) -> Path:
    """Shared atomic, checked download, with the local alternatives of these tasks in the hint."""
    return _download_file(url, dest, sha256, timeout,
                          hint=", or point the task at a local copy (dataset.root / task.csv_dirs / task.icons_dir)")


def fetch_csvs(dest: str | Path | None = None, base_url: str = MVH_RAW,
               include_models: bool = True, verify: bool = True,
               timeout: float = 30.0) -> Path:
    """The 10 human subjects' (and the reference models') cue-conflict CSVs -> directory."""
    dest = Path(dest) if dest else cache_root() / CSV_PATH
    files = dict(HUMAN_CSVS) | (MODEL_CSVS if include_models else {})
    for name, digest in files.items():
        download_file(f"{base_url}/{CSV_PATH}/{name}", dest / name, digest if verify else None,
                      timeout)
    return dest


def fetch_icons(dest: str | Path | None = None, base_url: str = MVH_RAW,
                categories: Sequence[str] = CATEGORIES, verify: bool = True,
                timeout: float = 30.0) -> Path:
    """The 16 category icons of the matrix plot -> directory."""
    dest = Path(dest) if dest else cache_root() / "icons"
    for cat in categories:
        download_file(f"{base_url}/{ICONS_PATH}/{cat}.png", dest / f"{cat}.png",
                      ICONS.get(cat) if verify else None, timeout)
    return dest


def cached_icons_dir() -> Path | None:
    """The icon cache when it holds all 16 icons (used by the plot without any download)."""
    d = cache_root() / "icons"
    return d if all((d / f"{c}.png").is_file() for c in CATEGORIES) else None


def _find_stimulus_root(top: Path) -> Path:
    """The directory under ``top`` that holds the 16 category folders."""
    for d in [top, *sorted(p for p in top.rglob("*") if p.is_dir())]:
        if all((d / c).is_dir() for c in CATEGORIES):
            return d
    raise DownloadError(f"no folder with the 16 category folders in the downloaded archive ({top})")


def _extract(archive: Path, into: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if f"/{STIMULI_SUBDIR_IN_ZIP}/" in f"/{m}"]
            for m in members:
                target = (into / m).resolve()
                if not target.is_relative_to(into.resolve()):
                    raise DownloadError(f"{archive}: unsafe path {m!r} in archive")
            zf.extractall(into, members=members or None)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(into, filter="data")


def fetch_cue_conflict(dest: str | Path | None = None, urls: Iterable[str] = STIMULI_URLS,
                       timeout: float = 60.0, keep_archive: bool = False) -> Path:
    """The 1280 cue-conflict stimuli -> ``dest`` (``<dest>/<category>/*.png``).

    Tries each URL in turn; the extracted set must pass the 16 x 80 layout check before it is
    moved into place, so ``dest`` is either complete or untouched.
    """
    dest = Path(dest) if dest else cache_root() / "cue-conflict"
    if dest.is_dir():
        try:
            list_cue_conflict(dest)
            return dest
        except ValueError:
            if any(dest.iterdir()):
                raise
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        work = Path(tempfile.mkdtemp(prefix=".cue-conflict.", dir=dest.parent))
        try:
            archive = download_file(url, work / url.rsplit("/", 1)[-1], timeout=timeout)
            extracted = work / "extracted"
            _extract(archive, extracted)
            root = _find_stimulus_root(extracted)
            list_cue_conflict(root)
            if tree_digest(root) != REFERENCE_TREE_DIGEST:
                log.warning("the stimuli from %s differ in content from the reference set "
                            "(layout is complete); numbers may differ slightly", url)
            if dest.exists():
                dest.rmdir()  # empty, checked above
            os.replace(root, dest)
            if keep_archive:
                os.replace(archive, dest.parent / archive.name)
            return dest
        except (DownloadError, ValueError, tarfile.TarError, zipfile.BadZipFile) as e:
            errors.append(f"{url}: {e}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    raise DownloadError("could not fetch the cue-conflict stimuli:\n  " + "\n  ".join(errors)
                        + f"\nDownload {STIMULI_URLS[0]} by hand and unpack it so that "
                        f"{dest}/<category>/*.png exist (16 folders x 80 PNGs).")
