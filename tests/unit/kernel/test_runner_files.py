"""Files in and out of the work directory through the runner (bai.kernel.files), driven by the
agent's side (bai.agent.files) over a real runner connection on the host's python3."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bai.agent.files import TransferBroken
from bai.agent.kernel import KernelRunner
from bai.common.agent_rpc import AgentError
from bai.kernel.files import CHUNK
from tests.unit.kernel.test_runner_display_completion_batch import start_runner, stop_runner


@pytest.fixture
async def kernel() -> AsyncIterator[tuple[KernelRunner, Path, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="bai-kf-", dir="/tmp"))
    outside = Path(tempfile.mkdtemp(prefix="bai-kf-outside-", dir="/tmp"))
    proc, conn, work = await start_runner(tmp)
    try:
        yield conn, work, outside
    finally:
        await stop_runner(proc, conn, tmp)
        shutil.rmtree(outside, ignore_errors=True)


async def _body(data: bytes, piece: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i:i + piece]


async def _download(conn: KernelRunner, path: str, max_size: int = 2**30) -> bytes:
    async with conn.files.download(path, max_size) as (size, chunks):
        data = b"".join([c async for c in chunks])
    assert len(data) == size
    return data


async def test_upload_list_download_round_trip(kernel: tuple[KernelRunner, Path, Path]) -> None:
    conn, work, _ = kernel
    data = os.urandom(3 * 2**20 + 17)
    assert await conn.files.upload("sub/dir/data.bin", _body(data)) == len(data)
    assert hashlib.sha256((work / "sub/dir/data.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert await _download(conn, "/home/work/sub/dir/data.bin".replace("/home/work", str(work))) == data
    assert await _download(conn, "sub/dir/data.bin") == data
    listing = await conn.files.list("sub/dir")
    assert [(f["filename"], f["size"], f["mode"][0]) for f in listing["files"]] == [("data.bin", len(data), "-")]
    assert listing["abspath"] == f"{work}/sub/dir"
    top = await conn.files.list(".")
    assert [f["filename"] for f in top["files"]] == ["sub"] and top["files"][0]["mode"].startswith("d")
    # Nothing of the upload is left behind but the file.
    assert sorted(os.listdir(work / "sub/dir")) == ["data.bin"]


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../escape.txt", "/tmp/x", "nul\x00byte"])
async def test_paths_outside_the_work_dir_are_refused(kernel: tuple[KernelRunner, Path, Path], path: str) -> None:
    conn, work, _ = kernel
    with pytest.raises(AgentError) as upload:
        await conn.files.upload(path, _body(b"x"))
    assert upload.value.status == 400
    with pytest.raises(AgentError) as download:
        await _download(conn, path)
    assert download.value.status == 400
    assert not (work.parent / "escape.txt").exists()


async def test_symlinks_planted_in_the_work_dir_are_never_followed(kernel: tuple[KernelRunner, Path, Path]) -> None:
    conn, work, outside = kernel
    (outside / "secret.txt").write_text("secret")
    (work / "to-outside").symlink_to(outside)
    (work / "to-secret").symlink_to(outside / "secret.txt")
    (work / "to-etc").symlink_to("/etc")
    for path in ("to-outside/secret.txt", "to-secret", "to-etc/hostname"):
        with pytest.raises(AgentError) as exc:
            await _download(conn, path)
        assert exc.value.status == 400, path
    for path in ("to-outside/planted.txt", "to-etc/planted.txt", "to-outside/new/planted.txt"):
        with pytest.raises(AgentError) as exc:
            await conn.files.upload(path, _body(b"planted"))
        assert exc.value.status == 400, path
    with pytest.raises(AgentError):
        await conn.files.list("to-outside")
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    # Uploading over the symlink itself replaces the link, not what it points to.
    await conn.files.upload("to-secret", _body(b"replaced"))
    assert not (work / "to-secret").is_symlink() and (work / "to-secret").read_bytes() == b"replaced"
    assert (outside / "secret.txt").read_text() == "secret"


async def test_missing_special_and_oversized_files(kernel: tuple[KernelRunner, Path, Path]) -> None:
    conn, work, _ = kernel
    with pytest.raises(AgentError) as missing:
        await _download(conn, "nothing-here.txt")
    assert missing.value.status == 404
    os.mkfifo(work / "fifo")
    with pytest.raises(AgentError) as fifo:
        await _download(conn, "fifo")
    assert fifo.value.status == 400
    (work / "big.bin").write_bytes(b"x" * 1000)
    with pytest.raises(AgentError) as big:
        await _download(conn, "big.bin", max_size=999)
    assert big.value.status == 413
    (work / "adir").mkdir()
    with pytest.raises(AgentError) as over_dir:
        await conn.files.upload("adir", _body(b"x"))
    assert over_dir.value.status == 400
    assert sorted(os.listdir(work)) == ["adir", "big.bin", "fifo"]


async def test_a_broken_upload_leaves_nothing(kernel: tuple[KernelRunner, Path, Path]) -> None:
    conn, work, _ = kernel

    async def breaks() -> AsyncIterator[bytes]:
        yield b"a" * 500_000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await conn.files.upload("partial.bin", breaks())
    # The abort is processed in order with anything sent after it.
    await conn.files.list(".")
    assert os.listdir(work) == []


def test_binary_frames_decode_only_on_the_runner_side() -> None:
    from bai.kernel.protocol import (
        MAX_RECORD_FRAME,
        FrameDecoder,
        ProtocolError,
        decode_header,
        encode_binary_frame,
        encode_frame,
    )

    stream = encode_frame({"op": "file-put-data", "id": "t1", "binary": True}) + encode_binary_frame(b"\x00\xffraw")
    decoder = FrameDecoder()
    # Fed in two pieces, as a socket may deliver them.
    messages = decoder.feed(stream[:7]) + decoder.feed(stream[7:])
    assert messages == [{"op": "file-put-data", "id": "t1", "binary": True},
                        {"op": "file-put-bytes", "data": b"\x00\xffraw"}]
    # The agent reads the runner's frames with decode_header and a 1 MiB limit: a binary frame
    # (only ever sent towards the runner) is refused there.
    with pytest.raises(ProtocolError):
        decode_header(encode_binary_frame(b"x")[:4], MAX_RECORD_FRAME)


async def test_base64_upload_records_still_work(kernel: tuple[KernelRunner, Path, Path]) -> None:
    import base64
    import secrets

    conn, work, _ = kernel
    tid = secrets.token_hex(4)
    await conn.files._request({"op": "file-put-begin", "id": tid, "path": "b64.txt"})
    await conn._send({"op": "file-put-data", "id": tid, "data": base64.b64encode(b"hello ").decode()})
    await conn._send({"op": "file-put-data", "id": tid, "data": base64.b64encode(b"world").decode()})
    assert (await conn.files._request({"op": "file-put-end", "id": tid}))["size"] == 11
    assert (work / "b64.txt").read_bytes() == b"hello world"


async def test_abandoned_downloads_free_their_transfer(kernel: tuple[KernelRunner, Path, Path]) -> None:
    conn, work, _ = kernel
    data = os.urandom(8 * 2**20)
    (work / "big.bin").write_bytes(data)
    for _ in range(12):  # more than the runner's 8 transfers at once: each one must be freed
        async with conn.files.download("big.bin", 2**30) as (_size, chunks):
            async for _chunk in chunks:
                break  # the client goes away after the first chunk
    assert await _download(conn, "big.bin") == data
    # The connection still carries queries.
    result = await conn.execute(None, "query", "print('alive')", 10.0)
    assert result["console"] == [["stdout", "alive\n"]]


async def _archive(conn: KernelRunner, path: str, max_size: int = 2**30) -> dict[str, tarfile.TarInfo | bytes]:
    """The tar ``path`` is sent as: ``{name: bytes}`` for files, ``{name: TarInfo}`` otherwise."""
    async with conn.files.download(path, max_size, archive=True) as (size, chunks):
        data = b"".join([c async for c in chunks])
    assert len(data) == size
    got: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member) if member.isreg() else None
            got[member.name] = extracted.read() if extracted is not None else member
    return got


async def test_a_directory_downloads_as_a_tar_of_everything_below_it(kernel: tuple[KernelRunner, Path, Path]) -> None:
    conn, work, outside = kernel
    blob = os.urandom(CHUNK * 2 + 7)
    (work / "top/sub/deeper").mkdir(parents=True)
    (work / "top/a.txt").write_bytes(b"a\n")
    (work / "top/sub/blob.bin").write_bytes(blob)
    (work / "top/sub/deeper/empty").write_bytes(b"")
    (work / "top/etc-link").symlink_to("/etc")
    (work / "top/sub/out-link").symlink_to(outside)
    os.mkfifo(work / "top/fifo")
    got = await _archive(conn, "top")
    assert sorted(got) == ["top", "top/a.txt", "top/etc-link", "top/sub", "top/sub/blob.bin", "top/sub/deeper",
                           "top/sub/deeper/empty", "top/sub/out-link"]
    assert got["top/a.txt"] == b"a\n" and got["top/sub/blob.bin"] == blob and got["top/sub/deeper/empty"] == b""
    for name, target in (("top/etc-link", "/etc"), ("top/sub/out-link", str(outside))):
        link = got[name]
        assert isinstance(link, tarfile.TarInfo) and link.issym() and link.linkname == target
    assert isinstance(got["top/sub"], tarfile.TarInfo) and got["top/sub"].isdir()
    # A file asked for as an archive is a one-entry tar; the same directory through a symlink is refused.
    assert await _archive(conn, "top/a.txt") == {"a.txt": b"a\n"}
    with pytest.raises(AgentError) as through_link:
        await _archive(conn, "top/etc-link")
    assert through_link.value.status == 400
    # Without archive a directory is still not a file.
    with pytest.raises(AgentError) as plain:
        await _download(conn, "top")
    assert plain.value.status == 400


async def test_an_oversized_directory_is_refused_before_any_byte(kernel: tuple[KernelRunner, Path, Path]) -> None:
    conn, work, _ = kernel
    (work / "big/sub").mkdir(parents=True)
    (work / "big/sub/x.bin").write_bytes(b"x" * 5000)
    with pytest.raises(AgentError) as big:
        await _archive(conn, "big", max_size=5000)
    assert big.value.status == 413 and "big" in big.value.msg
    # The refusal holds nothing: the runner's transfer slots are all free again.
    for _ in range(10):
        assert (await _archive(conn, "big"))["big/sub/x.bin"] == b"x" * 5000


async def test_a_file_shrinking_while_its_directory_is_sent_breaks_the_transfer(
        kernel: tuple[KernelRunner, Path, Path]) -> None:
    conn, work, _ = kernel
    (work / "grow").mkdir()
    big = work / "grow/big.bin"
    big.write_bytes(b"y" * 32 * 2**20)  # far more than the runner may send ahead unread
    async with conn.files.download("grow", 2**30, archive=True) as (size, chunks):
        assert size > 32 * 2**20
        os.truncate(big, 0)
        with pytest.raises(TransferBroken, match="shrank"):
            async for _ in chunks:
                pass
    # The broken transfer freed its slot: the directory downloads again, as it is now.
    assert (await _archive(conn, "grow"))["grow/big.bin"] == b""
