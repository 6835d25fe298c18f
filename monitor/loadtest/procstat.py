"""CPU and memory of a process over a load test, read from Linux's ``/proc``.

Every ``interval`` seconds: ``/proc/PID/stat`` (fields 14 and 15, user and system CPU
time in clock ticks, every thread of the process, not its children) and
``/proc/PID/status`` (``VmRSS``, the resident set, and ``Threads``). CPU is given as a
percentage of one core (200% is two cores busy); the resident set at the start, its median
over the samples and its peak.
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import MonitorError

__all__ = ["ProcessSampler", "ProcessStats", "check_pid"]

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessStats:
    pid: int
    samples: int
    interval_seconds: float
    cpu_seconds: float  # CPU time used between the first and the last sample
    cpu_percent: float  # mean over the run, of one core
    cpu_percent_peak: float  # the busiest interval
    rss_mb_start: float
    rss_mb_median: float
    rss_mb_peak: float
    threads_peak: int
    exited: bool  # the process ended during the run: figures up to then


def check_pid(pid: int, proc: Path = PROC) -> None:
    """Refuse, naming why, a pid whose figures cannot be read."""
    if not (proc / "self" / "stat").exists():
        raise MonitorError(f"--pid {pid}: CPU and memory are read from /proc, which this "
                           "system does not have (Linux only)")
    if pid <= 0 or not (proc / str(pid) / "stat").exists():
        raise MonitorError(f"--pid {pid}: no such process")
    try:
        _read(pid, proc)
    except OSError as exc:
        raise MonitorError(f"--pid {pid}: cannot read its /proc entry: {exc}") from None


def _read(pid: int, proc: Path) -> tuple[int, int, int]:
    """(CPU ticks, RSS in kB, threads) now; OSError once the process is gone."""
    stat = (proc / str(pid) / "stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    rss_kb = threads = 0
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return ticks, rss_kb, threads


class ProcessSampler:
    """Samples a process in a background thread between ``start()`` and ``stop()``."""

    def __init__(self, pid: int, interval: float = 0.5, proc: Path = PROC) -> None:
        check_pid(pid, proc)
        self.pid = pid
        self.interval = interval
        self.proc = proc
        self._hz = os.sysconf("SC_CLK_TCK")
        self._samples: list[tuple[float, int, int, int]] = []  # (time, ticks, rss kB, threads)
        self._exited = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqm-loadtest-procstat",
                                        daemon=True)

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def _sample(self) -> bool:
        try:
            ticks, rss, threads = _read(self.pid, self.proc)
        except (OSError, ValueError, IndexError):
            self._exited = True
            return False
        self._samples.append((time.monotonic(), ticks, rss, threads))
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._sample():
                return

    def stop(self) -> ProcessStats:
        self._stop.set()
        self._thread.join()
        if not self._exited:
            self._sample()
        return self.stats()

    def stats(self) -> ProcessStats:
        samples = self._samples
        first, last = samples[0], samples[-1]
        elapsed = last[0] - first[0]
        cpu = 100.0 * (last[1] - first[1]) / self._hz / elapsed if elapsed > 0 else 0.0
        peaks = [100.0 * (b[1] - a[1]) / self._hz / (b[0] - a[0])
                 for a, b in itertools.pairwise(samples) if b[0] > a[0]]
        rss = [s[2] / 1024 for s in samples]
        return ProcessStats(
            pid=self.pid, samples=len(samples), interval_seconds=self.interval,
            cpu_seconds=round((last[1] - first[1]) / self._hz, 2),
            cpu_percent=round(cpu, 1), cpu_percent_peak=round(max(peaks, default=cpu), 1),
            rss_mb_start=round(rss[0], 1), rss_mb_median=round(statistics.median(rss), 1),
            rss_mb_peak=round(max(rss), 1), threads_peak=max(s[3] for s in samples),
            exited=self._exited,
        )
