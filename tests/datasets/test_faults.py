"""Real faults, not mocks: a full file system, kills inside the write, bit flips in the file.

The full-disk tests mount a 12 MB tmpfs (root only: they skip, saying why, elsewhere).
"""
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from torch.utils.data import DataLoader

import wavefront.datasets.shards as shards
from wavefront.cli import main
from wavefront.datasets import H5FrameDataset, ShardError
from wavefront.datasets.generate import DatasetSpec, generate_dataset
from wavefront.datasets.shards import DiskFullError, probe_shard, read_shard, shard_name, verify_content

GEN = ["generate", "--preset", "default", "--frames", "60", "--shard-frames", "20", "--batch-size", "20",
       "--seed", "3", "--device", "cpu", "--no-progress"]


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.h5"))}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A complete 3-shard folder written by ``GEN`` and its bytes."""
    out = tmp_path_factory.mktemp("ref") / "data"
    assert main([*GEN, "--out", str(out)]) == 0
    return out, _bytes(out)


def _chunk_ranges(path: Path) -> tuple[np.ndarray, dict]:
    """Returns (mask of metadata bytes, {dataset: [(start, stop) per chunk]}) of an HDF5 file."""
    chunks = {}
    with h5py.File(path, "r") as f:
        for name, ds in f.items():
            chunks[name] = [(c.byte_offset, c.byte_offset + c.size)
                            for c in (ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks()))]
    meta = np.ones(path.stat().st_size, bool)
    for ranges in chunks.values():
        for a, b in ranges:
            meta[a:b] = False
    return meta, chunks


def _flip(path: Path, pos: int, bit: int = 0) -> None:
    raw = bytearray(path.read_bytes())
    raw[pos] ^= 1 << bit
    path.write_bytes(bytes(raw))


# ---- a full disk -------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real 12 MB file system (tmpfs), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a 12 MB tmpfs for the real-ENOSPC tests needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(disk: Path, leave_bytes: int) -> None:
    """Fills ``disk`` until about ``leave_bytes`` stay free."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            f.write(b"\0" * max(shutil.disk_usage(disk).free - leave_bytes, 0))
            while leave_bytes == 0:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_full_disk_ends_with_one_line_exit_2_and_every_complete_looking_shard_reads_back(small_disk):
    # The acceptance command: 4000 frames of ~7 MB per 500-frame shard into 12 MB.
    out = small_disk / "data"
    r = subprocess.run([sys.executable, "-m", "wavefront", "generate", "--frames", "4000", "--shard-frames", "500",
                        "--out", str(out), "--device", "cpu", "--threads", "1"], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert str(out) in lines[0] and "not enough free space" in lines[0] and "MB free" in lines[0]
    assert not list(out.glob("*partial"))
    done = sorted(out.glob("shard-*.h5"))
    assert done, "the first shard fits and must be kept"
    for p in done:
        verify_content(p)
    man = json.loads((out / "manifest.json").read_text())
    assert [s["file"] for s in man["shards"]] == [p.name for p in done] and not man["complete"]
    with pytest.warns(UserWarning, match="not complete"):
        assert len(H5FrameDataset(out)) == 500 * len(done)


@pytest.mark.parametrize("leave_mb", [0, 1])
def test_enospc_inside_a_write_removes_the_partial_and_names_the_folder(small_disk, small_config, monkeypatch,
                                                                        capsys, leave_mb):
    # The free-space check is told there is room, so the disk fills inside the write itself:
    # in the manifest (0 MB left) or in a 1.4 MB shard (1 MB left).
    out = small_disk / "data"
    out.mkdir()
    _fill(small_disk, leave_mb * 2**20)
    monkeypatch.setattr(shards, "free_bytes", lambda folder: 10**12)
    with pytest.raises(DiskFullError, match=str(out)):
        generate_dataset(DatasetSpec(small_config, 1, 200, 100, 100), out)
    left = sorted(p.name for p in out.iterdir())
    assert left in ([], ["manifest.json"]), left  # no .partial, no shard that looks complete


def test_export_mat_into_a_full_disk_is_one_line_and_leaves_only_complete_files(small_disk, reference, capsys):
    data, _ = reference
    _fill(small_disk, 200_000)  # room for a few 27 kB .mat files of the 60
    mat = small_disk / "mat"
    assert main(["export-mat", "--data", str(data), "--out", str(mat), "--no-progress"]) == 2
    line = _one_line(capsys)
    assert f"out='{mat}'" in line and "not enough free space" in line
    files = list(mat.rglob("*"))
    assert files and not [f for f in files if "partial" in f.name]
    for f in files:
        assert scipy.io.loadmat(f)["H"].shape == (120, 14, 2)


# ---- kills -------------------------------------------------------------------------------
def _killed_run(point: str, out: Path) -> None:
    """Runs GEN into ``out`` and SIGKILLs itself at ``point`` while shard 2 is written."""
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    building = {}
    real_image, real_create = shards.shard_image, h5py.Group.create_dataset
    real_write, real_claim, real_replace = shards._write_all, shards._claim_partial, os.replace

    def shard_image(arrays, attrs, compression="none"):
        building["index"] = attrs["shard_index"]
        return real_image(arrays, attrs, compression)

    def create_dataset(self, name, *a, **k):  # inside HDF5, two datasets into shard 2
        if point == "hdf5" and building.get("index") == 2 and name == "pilots_rx":
            die()
        return real_create(self, name, *a, **k)

    def claim(tmp):
        building["partial"] = tmp.name
        return real_claim(tmp)

    def write_all(fd, data):  # half of shard 2's bytes on disk
        if point == "write" and building.get("partial") == "shard-00002.h5.partial":
            os.write(fd, bytes(data[: len(data) // 2]))
            os.fsync(fd)
            die()
        return real_write(fd, data)

    def replace(src, dst):  # shard 2 complete, the manifest not yet updated
        real_replace(src, dst)
        if point == "rename" and Path(dst).name == "shard-00002.h5":
            die()

    shards.shard_image, h5py.Group.create_dataset = shard_image, create_dataset
    shards._write_all, shards._claim_partial, shards.os.replace = write_all, claim, replace
    main([*GEN, "--out", str(out)])
    os._exit(0)


@pytest.mark.parametrize("point", ["hdf5", "write", "rename"])
def test_kill_during_the_shard_write_resumes_to_the_bytes_of_an_uninterrupted_run(tmp_path, reference, point):
    out = tmp_path / "run"
    child = multiprocessing.get_context("fork").Process(target=_killed_run, args=(point, out))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    names = sorted(p.name for p in out.iterdir())
    assert "shard-00002.h5" in names if point == "rename" else "shard-00002.h5" not in names
    assert ("shard-00002.h5.partial" in names) == (point == "write")
    for p in out.glob("shard-*.h5"):  # whatever looks complete is complete
        verify_content(p)
    assert main([*GEN, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *reference[1]]
    assert _bytes(out) == reference[1]


# ---- bit flips ---------------------------------------------------------------------------
def test_bit_flips_across_shard_metadata_are_named_and_repair_restores_the_bytes(tmp_path, reference, capsys):
    out = tmp_path / "data"
    shutil.copytree(reference[0], out)
    victim = out / shard_name(1)
    meta, _ = _chunk_ranges(victim)
    positions = np.flatnonzero(meta)
    for pos in positions[:: len(positions) // 24]:  # 24 flips spread over every metadata structure
        _flip(victim, int(pos), int(pos) % 8)
        assert main([*GEN, "--out", str(out)]) == 2
        line = _one_line(capsys)
        assert "shard-00001.h5" in line and "--repair" in line
        assert main([*GEN, "--out", str(out), "--repair"]) == 0
        capsys.readouterr()
        assert _bytes(out) == reference[1], pos


def test_bit_flips_without_a_manifest_are_regenerated_or_named_never_a_traceback(tmp_path, reference, capsys):
    # No manifest: nothing records the file's bytes, so HDF5 must read it (in a child process).
    out = tmp_path / "data"
    shutil.copytree(reference[0], out)
    victim = out / shard_name(0)
    meta, _ = _chunk_ranges(victim)
    positions = np.flatnonzero(meta)
    named = 0
    for pos in positions[7:: len(positions) // 8]:
        (out / "manifest.json").unlink()
        _flip(victim, int(pos), int(pos) % 8)
        rc = main([*GEN, "--out", str(out)])
        err = capsys.readouterr().err
        assert rc in (0, 2) and "Traceback" not in err
        if rc == 2:
            named += 1
            assert len(err.strip().splitlines()) == 1 and shard_name(0) in err
            assert main([*GEN, "--out", str(out), "--repair"]) == 0
            assert _bytes(out) == reference[1], pos
        for p in out.glob("shard-*.h5"):
            verify_content(p)
        victim.write_bytes(reference[1][victim.name])
    assert named  # most flips land in structures HDF5 reads


def test_hdf5_crashing_on_a_damaged_file_becomes_an_error_naming_it(reference, monkeypatch):
    # Some metadata flips make HDF5 itself segfault; files nothing vouches for are read in a child.
    monkeypatch.setattr(shards, "verify_content", lambda path: os.kill(os.getpid(), signal.SIGSEGV))
    path = reference[0] / shard_name(0)
    with pytest.raises(ShardError, match=r"shard-00000\.h5.*HDF5 crashed"):
        probe_shard(path, full=True)


@pytest.mark.parametrize("dataset,frame", [("h_true", 7), ("pilots_ls", 12), ("snr_db", 0)])
def test_a_flipped_data_byte_is_caught_before_it_is_served(tmp_path, reference, capsys, dataset, frame):
    out = tmp_path / "data"
    shutil.copytree(reference[0], out)
    victim = out / shard_name(1)
    _, chunks = _chunk_ranges(victim)
    a, b = chunks[dataset][frame if dataset != "snr_db" else 0]
    _flip(victim, (a + b) // 2, 3)

    ds = H5FrameDataset(out)
    with pytest.raises(ShardError, match=r"shard-00001\.h5"):
        ds[20 + frame]
    good = read_shard(out / shard_name(2))
    assert torch.equal(ds[45]["h"], torch.from_numpy(good.h_true[5]))  # the other shards still serve
    with pytest.raises(ShardError, match=r"shard-00001\.h5") as exc:  # from a worker process too
        list(DataLoader(ds, batch_size=10, num_workers=1))
    assert "\n" not in str(exc.value) and "Traceback" not in str(exc.value)
    for argv in (["verify", "--data", str(out)],
                 ["export-mat", "--data", str(out), "--out", str(tmp_path / "mat"), "--no-progress"],
                 [*GEN, "--out", str(out)]):
        assert main(argv) == 2
        assert "shard-00001.h5" in _one_line(capsys)
    assert not [p for p in (tmp_path / "mat").glob("*.mat") if int(p.name.split("_")[0]) > 20]  # none of shard 1
    assert main([*GEN, "--out", str(out), "--repair"]) == 0
    assert main(["verify", "--data", str(out), "--no-progress"]) == 0
    assert _bytes(out) == reference[1]


@pytest.mark.parametrize("signature", [b"HEAP", b"SNOD", b"TREE"])  # local heap, symbol table, group B-tree
def test_damaged_group_structures_are_named_when_loading_and_when_reading(tmp_path, reference, signature):
    # h5py raises RuntimeError here ("bad local heap signature", ...), not OSError.
    out = tmp_path / "data"
    shutil.copytree(reference[0], out)
    victim = out / shard_name(1)
    ds = H5FrameDataset(out)  # intact when loaded; damaged before its first read
    _flip(victim, victim.read_bytes().index(signature), 5)
    with pytest.raises(ShardError, match=r"shard-00001\.h5.*corrupt"):
        ds[25]
    with pytest.raises(ShardError, match=r"shard-00001\.h5.*corrupt"):
        H5FrameDataset(out)


def test_a_damaged_identity_attribute_without_a_manifest_is_repaired_not_taken_for_another_run(
        tmp_path, reference, capsys):
    out = tmp_path / "data"
    shutil.copytree(reference[0], out)
    (out / "manifest.json").unlink()
    victim = out / shard_name(1)
    _flip(victim, victim.read_bytes().index(b'"num_sinusoids": 20') + 17, 0)  # 20 -> 21 in the config attribute
    assert main([*GEN, "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert "shard-00001.h5" in line and "attribute config" in line and "--repair" in line
    assert main([*GEN, "--out", str(out), "--repair"]) == 0
    assert _bytes(out) == reference[1]


def test_a_manifest_listing_shards_under_swapped_indices_is_named_when_loading(tmp_path, small_config):
    # Each entry keeps its own file and checksums, only the indices are swapped: every other
    # check passes, and without the shard_index check a reader would serve shard 1's frames as
    # frames 0..99, shard 0's as 100..199.
    out = tmp_path / "data"
    generate_dataset(DatasetSpec(small_config, 1, 200, 100, 100), out)
    man = json.loads((out / "manifest.json").read_text())
    a, b = man["shards"]
    a["index"], b["index"] = b["index"], a["index"]
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ShardError, match=r"is shard 1, the manifest lists it as 0"):
        H5FrameDataset(out)
