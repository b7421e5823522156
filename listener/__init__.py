"""The DICOM listener: a pynetdicom SCP that durably archives what a PACS sends.

One module per job: ``ae`` builds the application entity, ``access`` decides who may associate,
``header`` reads the few attributes the archive needs, ``archive`` indexes instances in SQL,
``reports`` turns SR documents into reports, ``quarantine`` keeps what was refused, ``ingest`` is
the C-STORE handler tying these together, ``audit`` records associations, ``stability`` marks
studies complete, and ``server`` starts and stops it all.
"""
