"""laser_fairseq/files.py: atomic writes of files and directories, and the sha256 of a file or a directory."""

import hashlib
import os

import pytest

from laser_fairseq.files import atomic_directory, atomic_path, sha256_of


def test_sha256_of_is_the_files_sha256_in_any_size(tmp_path):
    empty, small, large = tmp_path / "empty", tmp_path / "small", tmp_path / "large"
    empty.write_bytes(b"")
    small.write_bytes(b"abc")
    data = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: several chunks
    large.write_bytes(data)
    assert sha256_of(str(empty)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_of(str(small)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_of(str(large)) == hashlib.sha256(data).hexdigest()


def test_sha256_of_a_directory_digests_relative_paths_and_bytes_in_sorted_order(tmp_path):
    folder = tmp_path / "export"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.json").write_bytes(b"{}")
    (folder / "sub" / "a.bin").write_bytes(b"xyz")
    (folder / "a.txt").write_bytes(b"abc")
    expected = hashlib.sha256(b"a.txtabc" + b"b.json{}" + os.path.join("sub", "a.bin").encode() + b"xyz")
    assert sha256_of(str(folder)) == expected.hexdigest()
    (folder / "b.json").rename(folder / "c.json")  # same bytes under another name: another digest
    assert sha256_of(str(folder)) != expected.hexdigest()


def test_atomic_directory_replaces_an_existing_one_only_when_the_block_succeeds(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="failed"):
        with atomic_directory(str(output)) as temporary:
            os.makedirs(temporary)
            with open(os.path.join(temporary, "new.txt"), "w") as handle:
                handle.write("half")
            raise RuntimeError("failed")
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(output) == ["old.txt"]
    with atomic_directory(str(output)) as temporary:
        assert temporary == f"{output}.tmp-{os.getpid()}"
        os.makedirs(temporary)
        with open(os.path.join(temporary, "new.txt"), "w") as handle:
            handle.write("new")
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(output) == ["new.txt"]  # nothing set aside left


def test_atomic_directory_creates_the_parent_and_atomic_path_leaves_nothing_on_failure(tmp_path):
    output = tmp_path / "deep" / "out"
    with atomic_directory(str(output)) as temporary:
        os.makedirs(temporary)
    assert output.is_dir()
    target = tmp_path / "file.pt"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(str(target)) as temporary:
            with open(temporary, "wb") as handle:
                handle.write(b"partial")
            raise OSError("disk full")
    assert sorted(os.listdir(tmp_path)) == ["deep", "file.pt"] and target.read_bytes() == b"old"
