"""StopSignals: the handler records, the main thread's wait returns (a real signal, sent to this process)."""

import os
import signal
import threading

from radpair.core.signals import StopSignals


def test_a_signal_ends_the_wait_and_is_named() -> None:
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        signals = StopSignals([signal.SIGUSR1])
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        assert signals.wait(every=0.05) == "SIGUSR1"
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_the_condition_ends_the_wait_without_a_signal() -> None:
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        flag = threading.Event()
        threading.Timer(0.2, flag.set).start()
        assert StopSignals([signal.SIGUSR1]).wait(until=flag.is_set, every=0.05) == "condition"
    finally:
        signal.signal(signal.SIGUSR1, previous)
