# Copyright 2026 The uniaudio2 contributors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Small helpers shared by the recipes and the bundle builders."""

import os
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(output_dir):
    """
    Yield a fresh temporary directory next to `output_dir`. When the block succeeds it replaces `output_dir`; when it
    raises (or is interrupted) the temporary directory is removed, so no half-written result is ever left behind.
    """
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    # mkdtemp creates the directory private (0700); the result gets the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    tmp_dir.chmod(0o777 & ~umask)
    try:
        yield tmp_dir
        if output_dir.exists():
            shutil.rmtree(output_dir)
        tmp_dir.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def check_wav_complete(path) -> None:
    """
    Raise a `ValueError` naming `path` when it is a RIFF/WAVE file whose `data` chunk is shorter than its header
    declares (a cut download or an interrupted copy: libsndfile then reads the samples that are there, silently).
    Other formats, and wavs of unknown length (streamed, size 0 or 0xFFFFFFFF), are not checked.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        header = file.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        offset = 12
        while offset + 8 <= size:
            file.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", file.read(8))
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    raise ValueError(
                        f"{path} is truncated: its header declares {chunk_size} bytes of audio, the file holds "
                        f"{available}"
                    )
                return
            offset += 8 + chunk_size + (chunk_size & 1)
    raise ValueError(f"{path} is truncated: it ends before its audio data")


__all__ = ["atomic_directory", "check_wav_complete"]
