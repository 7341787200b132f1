"""What this machine has to offer: CPU, memory, load, GPUs (read with psutil; GPUs via pynvml if present)."""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import psutil

from ..core.presence import Gpu

__all__ = ["MachineLoad", "cpu_model", "gpus", "machine_load"]


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()[:200]
    except OSError:
        pass
    return (platform.processor() or platform.machine())[:200]


@functools.cache
def gpus() -> tuple[Gpu, ...]:
    """NVIDIA GPUs through pynvml when it is installed and a driver answers; none otherwise."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            found = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
                found.append(Gpu(name=(name.decode() if isinstance(name, bytes) else name)[:200], memory=int(memory)))
            return tuple(found[:16])
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no pynvml, no driver, no device: all mean "no GPU"
        return ()


@dataclass(frozen=True, slots=True)
class MachineLoad:
    load1: float
    mem_free: int
    mem_total: int


def machine_load() -> MachineLoad:
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else psutil.cpu_percent() / 100 * (os.cpu_count() or 1)
    mem = psutil.virtual_memory()
    return MachineLoad(load1=round(load1, 2), mem_free=int(mem.available), mem_total=int(mem.total))
