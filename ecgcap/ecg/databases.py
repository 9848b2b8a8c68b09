"""The registry of supported PhysioNet databases: adding one is adding an entry here."""

from __future__ import annotations

from dataclasses import dataclass, field

from ecgcap.runtime.errors import EcgcapError

# AAMI EC57 mapping of MIT-BIH beat symbols to the five heartbeat classes.
AAMI_MAP: dict[str, str] = {
    **dict.fromkeys("NLRej", "N"),
    **dict.fromkeys("AaJS", "S"),
    **dict.fromkeys("VE", "V"),
    "F": "F",
    **dict.fromkeys("/fQ", "Q"),
}

# The inter-patient protocol of de Chazal, O'Dwyer and Reilly (2004).
MITDB_PACED = ("102", "104", "107", "217")
MITDB_DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124",
             "201", "203", "205", "207", "208", "209", "215", "220", "223", "230")
MITDB_DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212",
             "213", "214", "219", "221", "222", "228", "231", "232", "233", "234")


@dataclass(frozen=True)
class Database:
    """What ecgcap needs to know about one PhysioNet database.

    Attributes
    ----------
    name : registry key and the folder name under the data root.
    slug : PhysioNet path with version, for downloads (``mitdb/1.0.0``).
    task : ``"beats"`` (a label per annotated beat) or ``"rhythm"`` (a label per recording).
    fs : sampling rate in Hz.
    leads : lead names in the usual order; ``lead`` is the one used by default.
    annotator : annotation file extension holding the beat labels (beats task).
    reference : CSV file with ``record,label`` lines (rhythm task).
    classes : the model's output classes, in order.
    label_map : database symbol or label to class.
    split : default split, ``{"train": records, "test": records, "exclude": records}``.
    extensions : files per record, for downloads.
    """

    name: str
    slug: str
    task: str
    fs: float
    leads: tuple[str, ...]
    lead: str
    classes: tuple[str, ...]
    label_map: dict[str, str]
    annotator: str | None = None
    reference: str | None = None
    split: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extensions: tuple[str, ...] = (".hea", ".dat")


DATABASES: dict[str, Database] = {
    "mitdb": Database(
        name="mitdb", slug="mitdb/1.0.0", task="beats", fs=360.0, leads=("MLII", "V1", "V2",
        "V4", "V5"), lead="MLII", classes=("N", "S", "V", "F", "Q"), label_map=AAMI_MAP,
        annotator="atr", split={"train": MITDB_DS1, "test": MITDB_DS2, "exclude": MITDB_PACED},
        extensions=(".hea", ".dat", ".atr"),
    ),
    "cinc2017": Database(
        name="cinc2017", slug="challenge-2017/1.0.0/training", task="rhythm", fs=300.0,
        leads=("ECG",), lead="ECG", classes=("N", "A", "O", "~"),
        label_map={"N": "N", "A": "A", "O": "O", "~": "~"}, reference="REFERENCE.csv",
        extensions=(".hea", ".mat"),
    ),
}


def get_database(name: str) -> Database:
    """The registry entry for ``name``; an :class:`EcgcapError` listing the known ones otherwise."""
    try:
        return DATABASES[name]
    except KeyError:
        known = ", ".join(sorted(DATABASES))
        raise EcgcapError(f"unknown database; known: {known}", input=f"--db {name}") from None
