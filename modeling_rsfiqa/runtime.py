"""Process-level settings for CPU inference.

PyTorch on CPU allocates every activation with ``malloc``. glibc hands large blocks back to the kernel as
soon as they are freed (``mmap``/``munmap`` and heap trimming), so each forward pass of a CNN at 500 px
page-faults its ~100 MB of activations in again: on 2 threads the MobileNetV2 backbone of the default model
took 45-55 ms instead of 30 ms. Raising glibc's mmap and trim thresholds keeps that memory in the process
(resident size stays at the peak of one forward pass). This is the same remedy PyTorch's CPU performance
guide gives with jemalloc/tcmalloc, done with ``mallopt`` so nothing has to be preloaded.

It changes the allocator of the WHOLE process, so the library never does it unasked: creating
``pipeline("image-quality")`` leaves malloc alone. Programs that own their process opt in: the ``rsfiqa``
command line (score, demo, evaluate) and its web app call :func:`tune_cpu_allocator`; a user's program can
call it too, pass ``tune_allocator=True`` to the pipeline, or set ``RSFIQA_MALLOC_TUNING=1`` (``=0`` refuses
it everywhere, also where an application asks for it). ``benchmarks/bench_default.py`` prints both figures.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

__all__ = ["tune_cpu_allocator", "ALLOCATOR_ENV"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
#: environment variable: "1" = pipelines tune the allocator when created, "0" = never tune it
ALLOCATOR_ENV = "RSFIQA_MALLOC_TUNING"
_ENV_OPT_OUT = ALLOCATOR_ENV
_state: dict[str, bool] = {}


def tune_cpu_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Keep freed tensor memory in the process instead of returning it to the OS after every forward.

    Sets glibc's ``M_MMAP_THRESHOLD`` (blocks up to this size come from the heap; 32 MiB is glibc's
    maximum) and ``M_TRIM_THRESHOLD`` (free heap kept before trimming). Process-wide and idempotent.
    Does nothing (returns False) off glibc, when ``RSFIQA_MALLOC_TUNING=0``, or when the user already
    chose with ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``. Returns whether the thresholds are set.
    """
    if "done" in _state:
        return _state["done"]
    ok = False
    if os.environ.get(_ENV_OPT_OUT, "1") == "0":
        logger.info("%s=0: glibc malloc thresholds left alone", _ENV_OPT_OUT)
    elif "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        logger.info("MALLOC_*_THRESHOLD_ set by the environment: left alone")
    elif platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
            )
        except (OSError, AttributeError):
            ok = False
        if ok:
            logger.info(
                "glibc malloc: mmap threshold %d MiB, trim threshold %d MiB (CPU inference; %s=0 to disable)",
                mmap_threshold >> 20,
                trim_threshold >> 20,
                _ENV_OPT_OUT,
            )
    _state["done"] = ok
    return ok
