"""``radpair send`` and core.scu against real peers: DCMTK storescp, and pynetdicom SCPs started
here whose handlers answer chosen statuses (the only way to provoke a per-instance failure)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import EnhancedSRStorage, MRImageStorage

from radpair.cli import main
from radpair.core.scu import Peer, PeerUnavailable, store_datasets, store_files
from tests.support.dcmtk import StoreSCP
from tests.support.ports import free_port
from radpair.training.cohort import read_cohort

REFUSE = 0xA700  # Out of Resources


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def radpair(capsys: pytest.CaptureFixture[str]):  # noqa: ANN201 - a small runner
    """The real ``radpair`` command line, in this process (a subprocess would spend seconds
    importing torch for every call)."""
    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Result(code, out.out, out.err)
    return run


def test_cohort_sent_with_radpair_send_arrives_complete(cohort: Path, storescp: StoreSCP, radpair) -> None:  # noqa: ANN001
    result = radpair("send", str(cohort), "--to", f"127.0.0.1:{storescp.port}", "--ae-title", storescp.aet)
    assert result.returncode == 0, result.stderr
    sent = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in cohort.rglob("*.dcm")}
    received = {pydicom.dcmread(p).SOPInstanceUID: p for p in storescp.folder.iterdir()}
    assert received.keys() == sent.keys()
    assert f"sent {len(sent)}/{len(sent)} instances" in result.stdout and "skipped" in result.stdout
    study = read_cohort(cohort)[0]
    first = sorted(study.series_dir.glob("*.dcm"))[0]
    original = pydicom.dcmread(first)
    assert pydicom.dcmread(received[original.SOPInstanceUID]).PixelData == original.PixelData


def test_peer_down_raises_peer_unavailable(cohort: Path, radpair) -> None:  # noqa: ANN001
    port = free_port()  # nothing listens there
    with pytest.raises(PeerUnavailable) as caught:
        store_files(sorted(cohort.rglob("*.dcm"))[:2], Peer("127.0.0.1", port, "NOBODY", timeout=5))
    assert isinstance(caught.value, ConnectionError) and caught.value.outcomes == []
    result = radpair("send", str(cohort), "--to", f"127.0.0.1:{port}", "--ae-title", "NOBODY", "--timeout", "5")
    assert result.returncode == 2 and "cannot associate" in result.stderr


@dataclass
class SCP:
    """A pynetdicom storage SCP in this process, answering REFUSE for chosen instances."""

    port: int
    refuse: set[str] = field(default_factory=set)
    received: dict[str, pydicom.Dataset] = field(default_factory=dict)
    associations: list[set[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self.lock:
            self.received[ds.SOPInstanceUID] = ds
            self.associations[-1].add(ds.StudyInstanceUID)
        return REFUSE if ds.SOPInstanceUID in self.refuse else 0x0000

    def on_accepted(self, event: evt.Event) -> None:
        with self.lock:
            self.associations.append(set())


def _scp(contexts: list[tuple[str, list[str]]]) -> Iterator[SCP]:
    ae = AE(ae_title="TESTSCP")
    for sop_class, syntaxes in contexts:
        ae.add_supported_context(sop_class, syntaxes)
    scp = SCP(port=free_port())
    server = ae.start_server(("127.0.0.1", scp.port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, scp.on_store), (evt.EVT_ACCEPTED, scp.on_accepted)])
    yield scp
    server.shutdown()


@pytest.fixture
def mr_sr_scp() -> Iterator[SCP]:
    """Accepts MR and Enhanced SR only (no CT), in every transfer syntax."""
    yield from _scp([(MRImageStorage, ALL_TRANSFER_SYNTAXES), (EnhancedSRStorage, ALL_TRANSFER_SYNTAXES)])


def test_per_instance_failures_are_reported_and_the_rest_is_stored(cohort: Path, mr_sr_scp: SCP, tmp_path: Path,
                                                                   radpair) -> None:  # noqa: ANN001
    studies = read_cohort(cohort)[:2]
    files = [p for s in studies for p in sorted(s.series_dir.glob("*.dcm"))] + [s.report_path for s in studies]
    refused = pydicom.dcmread(files[3], stop_before_pixels=True).SOPInstanceUID
    mr_sr_scp.refuse.add(refused)
    garbage = tmp_path / "notes.dcm"
    garbage.write_text("not DICOM")
    ct = Path(get_testdata_file("CT_small.dcm"))  # a SOP class the peer does not accept

    outcomes = store_files([*files, garbage, ct], Peer("127.0.0.1", mr_sr_scp.port, "TESTSCP"))

    assert [o.path for o in outcomes] == [*files, garbage, ct]  # one outcome per input, in input order
    by_path = {o.path: o for o in outcomes}
    bad = by_path[files[3]]
    assert (bad.status, bad.ok, bad.sop_instance_uid) == (REFUSE, False, refused) and "0xA700" in bad.error
    assert by_path[garbage].status is None and "not a readable DICOM" in by_path[garbage].error
    assert by_path[ct].status is None and "accepted no presentation context" in by_path[ct].error
    assert all(by_path[p].ok and by_path[p].error == "" for p in files if p != files[3])
    assert set(mr_sr_scp.received) == {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files}
    # One association per study; the CT file's one was accepted with no usable context, so empty.
    assert sorted(map(len, mr_sr_scp.associations)) == [0, 1, 1]
    assert {uid for a in mr_sr_scp.associations for uid in a} == {s.study_uid for s in studies}

    result = radpair("send", *map(str, files[:5]), "--to", f"127.0.0.1:{mr_sr_scp.port}", "--ae-title", "TESTSCP")
    assert result.returncode == 1 and f"FAILED {files[3]}" in result.stderr and "sent 4/5" in result.stdout


def test_compressed_datasets_go_in_their_own_transfer_syntax(cohort: Path, mr_sr_scp: SCP) -> None:
    """Two compressed syntaxes of one SOP class need two contexts; each goes in its own."""
    study = read_cohort(cohort)[0]
    datasets = [pydicom.dcmread(sorted(study.series_dir.glob("*.dcm"))[0]), pydicom.dcmread(study.report_path),
                pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm")),
                pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))]
    datasets[3].SOPInstanceUID = generate_uid()  # pydicom ships it with the RLE file's UID
    outcomes = store_datasets(datasets, Peer("127.0.0.1", mr_sr_scp.port, "TESTSCP"))
    assert all(o.ok for o in outcomes), outcomes
    for ds in datasets:
        got = mr_sr_scp.received[ds.SOPInstanceUID]
        syntax = ds.file_meta.TransferSyntaxUID
        # Compressed data goes as it is; uncompressed may go in whichever uncompressed syntax the peer picked.
        assert got.file_meta.TransferSyntaxUID == syntax or not (syntax.is_compressed or got.file_meta.TransferSyntaxUID.is_compressed)
        assert got.SOPClassUID == ds.SOPClassUID
        assert got.PixelData == ds.PixelData if syntax.is_compressed else True
