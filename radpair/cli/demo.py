"""``radpair demo``: with ``radpair serve`` running, send it a few synthetic studies and show the results.

It plays the PACS: writes a small synthetic cohort (MR series + report SR per study), sends each
study to radpair's listener by C-STORE, then follows the studies through the pipeline in the
archive (stable → analysed → delivered) and prints, next to each study's true label, what the
model said and where the results are: the files in the instance store and, per configured
destination, whether the PACS has acknowledged them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from radpair.cli.options import add_settings_options, settings_from_args

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from radpair.core.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="send a small synthetic cohort to a running `radpair serve` and show the results")
    add_settings_options(p)
    p.add_argument("--n", type=int, default=3, help="studies to generate and send (default 3)")
    p.add_argument("--seed", type=int, default=7, help="cohort seed: the same seed writes the same studies (default 7)")
    p.add_argument("--size", type=int, nargs=3, metavar=("D", "H", "W"), default=(64, 64, 64),
                   help="volume size of the generated MR series (default 64 64 64)")
    p.add_argument("--out", metavar="DIR", help="where to write the cohort (default: a temporary folder)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all results")
    p.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from radpair.core.scu import Peer, PeerUnavailable, store_files
    from radpair.core.task import load_task
    from radpair.training.cohort import read_cohort
    from radpair.training.cohort.generate import CohortSpec, generate_cohort
    from radpair.training.cohort.shifts import resolve_shift

    settings = settings_from_args(args)
    with tempfile.TemporaryDirectory(prefix="radpair-demo-") as tmp:
        folder = Path(args.out) if args.out else Path(tmp) / "cohort"
        generate_cohort(CohortSpec(folder, args.n, args.seed, resolve_shift(None), load_task(settings.task),
                                   tuple(args.size)))
        studies = read_cohort(folder)
        peer = Peer(settings.listener.host if settings.listener.host != "0.0.0.0" else "127.0.0.1",
                    settings.listener.port, settings.listener.ae_title, calling_aet="RADPAIR_DEMO")
        for study in tqdm(studies, desc="sending studies", unit="study"):
            files = sorted(study.series_dir.glob("*.dcm")) + [study.report_path]
            try:
                failed = [o for o in store_files(files, peer) if o.status != 0]
            except PeerUnavailable as exc:
                print(f"radpair demo: {exc}; is `radpair serve` running with the same settings?", file=sys.stderr)
                return 2
            if failed:
                print(f"radpair demo: {len(failed)} instance(s) of {study.study_uid} refused: {failed[0].error}")
                return 1
        print(f"sent {len(studies)} studies to {peer.called_aet}@{peer.host}:{peer.port}; "
              f"results follow once each study is stable ({settings.listener.stable_age:g} s without new instances)")
        return _follow(settings, {s.study_uid: s.label for s in studies}, args.timeout)


def _follow(settings: Settings, truth: dict[str, str], timeout: float) -> int:
    """Wait for every study's inference job, then print each result next to its true label."""
    from sqlalchemy import select
    from tqdm import tqdm

    from radpair.core.db import make_engine, session_factory
    from radpair.core.models import Job, JobState, Study

    final = (JobState.DONE, JobState.SKIPPED, JobState.DEAD)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    study_uids = list(truth)
    deadline = time.monotonic() + timeout
    with tqdm(total=len(study_uids), desc="analysed", unit="study") as bar:
        while True:
            with sessions() as session:
                done = set(session.scalars(
                    select(Study.study_uid).join(Job, Job.study_pk == Study.id)
                    .where(Study.study_uid.in_(study_uids), Job.kind == "inference", Job.state.in_(final))
                ))
            bar.n = len(done)
            bar.refresh()
            if len(done) == len(study_uids) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    _print_results(settings, sessions, truth)
    engine.dispose()
    return 0 if len(done) == len(study_uids) else 1


def _print_results(settings: Settings, sessions: sessionmaker[Session], truth: dict[str, str]) -> None:
    from sqlalchemy import select

    from radpair.core.models import Delivery, Job, JobState, Result, Study

    with sessions() as session:
        for uid, label in truth.items():
            study = session.scalar(select(Study).where(Study.study_uid == uid))
            if study is None:
                print(f"\nstudy {uid}: not in the archive (is `radpair serve` running with the same settings?)")
                continue
            job = session.scalars(select(Job).where(Job.study_pk == study.id, Job.kind == "inference")
                                  .order_by(Job.id.desc())).first()
            print(f"\nstudy {uid} (accession {study.accession_number}): {job.state.value if job else study.state.value}; "
                  f"true label {label} (the cohort's, never sent)")
            if job is not None and job.state is not JobState.DONE:
                print(f"  {job.last_error.strip().splitlines()[-1] if job.last_error.strip() else 'in progress'}")
            if job is not None and job.state is JobState.DONE and not settings.pipeline.destinations:
                print("  (no pipeline.destinations configured: the results stay in radpair's archive)")
            for result in session.scalars(select(Result).where(Result.study_pk == study.id,
                                                               Result.superseded_by.is_(None))):
                print(f"  {result.kind.upper():3} {result.predicted_class} p={result.probability:.3f} "
                      f"model {result.model_name} v{result.model_version}: {settings.store_dir / result.path}")
                for d in session.scalars(select(Delivery).where(Delivery.result_pk == result.id)):
                    print(f"      -> {d.destination}: {d.state}{' (' + d.last_error + ')' if d.last_error else ''}")
