"""Request and response schemas of the CTR service, built from the served encoder's fields.

A record is one row in the normalized-table form: every field the model's encoder reads
(``user_id``, ``item_id``, ``scenario`` and the dataset's user/item columns) must be present; any
other key (``title``, ``rating``, ``label``, ...) is ignored, so a training-table row can be sent as
is. Values:

* ids (``user_id``, ``item_id``): a string or an integer, never null;
* categorical and multi-valued fields: a string or an integer, or null (missing -> OOV);
* numeric fields (``age``, ``year``): an integer or a finite number, or null.

Unknown values are valid input: they map to the OOV bucket and still score. Wrong types, missing
fields, booleans, strings longer than :data:`MAX_TEXT`, non-finite or huge numbers, an empty list or
more than ``max_records`` records are rejected by pydantic, which BentoML turns into a 400 whose
``detail`` names the location of every error (``["records", 0, "user_id", "constrained-str"]``: the
list, the record's index, the field, then the alternative type that was tried).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Optional, Union

from pydantic import ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from typing_extensions import TypedDict

MAX_TEXT = 1024  # characters per string value; genres lists and zip codes are far shorter
MAX_ABS_NUMBER = 1e15
ID_FIELDS = ("user_id", "item_id")

# Native pydantic-core types only (no Python validator per value): validating 1,000 records costs a
# few milliseconds. Integers stay integers; the encoder reads 5 and "5" alike.
Token = Union[
    Annotated[StrictStr, Field(max_length=MAX_TEXT)], Annotated[StrictInt, Field(ge=-(2**63) + 1, le=2**63 - 1)]
]
Number = Union[
    Annotated[StrictInt, Field(ge=-MAX_ABS_NUMBER, le=MAX_ABS_NUMBER)],
    Annotated[StrictFloat, Field(ge=-MAX_ABS_NUMBER, le=MAX_ABS_NUMBER, allow_inf_nan=False)],
]


def record_model(fields: Sequence[dict[str, str]], name: str = "Record") -> type:
    """A TypedDict of one record for encoder ``fields`` (``[{"name", "kind"}, ...]`` as in a
    ``FeatureSpec``; kind ``categorical`` | ``multi`` | ``numeric``); validated records stay dicts."""
    annotations: dict[str, Any] = {}
    for field in fields:
        if field["name"] in ID_FIELDS:
            annotations[field["name"]] = Token
        elif field["kind"] == "numeric":
            annotations[field["name"]] = Optional[Number]
        else:
            annotations[field["name"]] = Optional[Token]
    record = TypedDict(name, annotations)  # every key required (total=True); null allowed where Optional
    example = {f["name"]: _EXAMPLE.get(f["name"]) for f in fields}
    record.__pydantic_config__ = ConfigDict(extra="ignore", json_schema_extra={"example": example})
    return record


def records_type(record: type, max_records: int) -> Any:
    """The annotation of the ``records`` argument: 1 to ``max_records`` records."""
    return Annotated[
        list[record], Field(min_length=1, max_length=max_records, description=f"1 to {max_records} records to score")
    ]


class Prediction(TypedDict):
    """The score of one record (a TypedDict: responses stay plain dicts, cheap for 1,000-record batches)."""

    probability: Annotated[float, Field(description="predicted click probability")]
    model_version: Annotated[str, Field(description="BentoML tag (name:version) of the model that scored it")]


_EXAMPLE = {  # one ML-100K row, shown in the OpenAPI docs
    "user_id": "196",
    "item_id": "306",
    "scenario": "age>=35",
    "gender": "M",
    "age": 49,
    "occupation": "writer",
    "zip": "55105",
    "genres": "Drama|Romance",
    "year": 1997,
}
