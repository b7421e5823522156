"""The retraining job: snapshot, train, evaluate, gate, promote, roll back; every model-version
row is written here (:mod:`radpair.retrain.lineage`).

``scheduled_retrain`` is the reference the cron job stores in the SQL job store
(``"radpair.retrain:scheduled_retrain"``); it stays here, importing nothing heavy, so a stored
job from any radpair version resolves.
"""


def scheduled_retrain() -> None:
    """What the stored cron job calls: a run in the process's retrain component."""
    from radpair.retrain.schedule import fire

    fire()
