"""Atomic writes when the write itself fails: one line naming the file, the reason, nothing left behind."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

import pytest

from cotrain.atomic import WriteError, atomic_open, write_bytes_atomic, write_error


def test_no_room_errors_name_the_file_and_the_cause() -> None:
    cases = {errno.ENOSPC: "the disk is full (ENOSPC)", errno.EDQUOT: "the disk quota is exceeded (EDQUOT)",
             errno.EFBIG: "file-size limit (EFBIG)"}
    for code, words in cases.items():
        msg = str(write_error("/data/out/shard-000001.tar", OSError(code, os.strerror(code))))
        assert msg.startswith("cannot write /data/out/shard-000001.tar: ") and words in msg, msg
        assert "run the same command again" in msg and "\n" not in msg
    other = str(write_error("/ro/x.json", OSError(errno.EROFS, os.strerror(errno.EROFS))))
    assert other == "cannot write /ro/x.json: Read-only file system (EROFS)"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full, which fails every write with ENOSPC")
def test_a_real_enospc_from_the_kernel(tmp_path: Path) -> None:
    target = tmp_path / "shard-000000.tar"
    (tmp_path / "shard-000000.tar.tmp").symlink_to("/dev/full")  # the temp name now leads to a full device
    with pytest.raises(WriteError, match=r"shard-000000.tar: the disk is full \(ENOSPC\)"):
        write_bytes_atomic(target, b"x" * 100_000)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary name is left


def test_file_size_limit_mid_write_leaves_nothing(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        with pytest.raises(WriteError, match="big.bin: .*EFBIG"), atomic_open(tmp_path / "big.bin") as fh:
            for _ in range(10):
                fh.write(b"y" * 1000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(tmp_path.iterdir()) == []


def test_the_callers_own_oserror_is_not_called_a_write_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_open(tmp_path / "out.bin") as fh:
        fh.write(b"partial")
        (tmp_path / "missing-source").read_bytes()  # reading an input failed, not writing the output
    assert list(tmp_path.iterdir()) == []
