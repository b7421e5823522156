"""A real C-STORE SCP (pynetdicom, its own process on loopback) whose answer a test controls.

It stands for a PACS whose disk fills up and frees again: while the file ``answer`` in its folder
holds a status in hex (``A700``, ``C000``), every C-STORE gets that status and nothing is stored;
without it, the instance is written under ``stored/`` and 0x0000 is answered. Every request is
appended to ``requests.log`` (``<status> <SOP Instance UID>``), so a test counts what arrived.
With :meth:`delay` set, each C-STORE is answered only after that many seconds (``arrived`` is
touched first), so a test can kill the sender while a C-STORE is in flight.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.support.ports import free_port


class ControlledSCP:
    def __init__(self, folder: Path, aet: str = "PACS") -> None:
        self.folder = folder
        self.port = free_port()
        self.aet = aet
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def answer(self, status: int | None) -> None:
        """Answer every C-STORE with ``status`` from now on; None: store and answer 0x0000."""
        path = self.folder / "answer"
        if status is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(f"{status:04X}")

    def delay(self, seconds: float | None) -> None:
        """Hold each answer ``seconds`` (None: answer at once)."""
        path = self.folder / "delay"
        if seconds is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(str(seconds))

    def in_flight(self) -> bool:
        """Whether a C-STORE has arrived that is (or was) held by :meth:`delay`."""
        return (self.folder / "arrived").exists()

    def requests(self) -> list[tuple[int, str]]:
        log = self.folder / "requests.log"
        lines = log.read_text().split("\n") if log.exists() else []
        return [(int(status, 16), uid) for status, uid in (line.split() for line in lines if line)]

    def stored(self) -> list[str]:
        """SOP Instance UIDs stored with 0x0000, one entry per acknowledged C-STORE (repeats kept)."""
        return [uid for status, uid in self.requests() if status == 0]

    def start(self) -> "ControlledSCP":
        self.process = subprocess.Popen([sys.executable, "-m", "tests.support.scp", str(self.port), self.aet,
                                         str(self.folder)], cwd=Path(__file__).resolve().parents[2],
                                        stdout=subprocess.DEVNULL, stderr=open(self.folder / "scp.log", "ab"))
        deadline = time.monotonic() + 30
        while not (self.folder / "ready").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the SCP did not start; see {self.folder / 'scp.log'}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        (self.folder / "ready").unlink(missing_ok=True)
        self.process = None


def _serve(port: int, aet: str, folder: Path) -> None:
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

    (folder / "stored").mkdir(exist_ok=True)

    def on_store(event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        delay = folder / "delay"
        if delay.exists():
            (folder / "arrived").touch()
            time.sleep(float(delay.read_text()))
        answer = folder / "answer"
        status = int(answer.read_text(), 16) if answer.exists() else 0
        if status == 0:
            (folder / "stored" / f"{uid}.dcm").write_bytes(event.encoded_dataset())
        with open(folder / "requests.log", "a") as log:
            log.write(f"{status:04X} {uid}\n")
        return status

    ae = AE(ae_title=aet)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    (folder / "ready").touch()
    try:
        import signal

        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        server.shutdown()


if __name__ == "__main__":
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    _serve(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
