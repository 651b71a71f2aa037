"""Raw-data loaders: every raw format gives the normalized table, and every bad input a DataError
that names the file and the problem."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from assets.datasets import load_interactions
from assets.datasets.common import split_title_year
from assets.schema import columns_for
from llm4ctr.errors import DataError, ParamsError
from llm4ctr.params import Params, load_params
from tests import fixtures_raw as F

ROOT = Path(__file__).resolve().parents[1]
AMAZON_CATEGORIES = list(F.AMAZON)


def params_with(**overrides) -> Params:
    """The project's params.yaml with dotted overrides (``data__x`` stands for ``data.x``)."""
    return load_params(ROOT / "params.yaml", {k.replace("__", "."): v for k, v in overrides.items()})


def amazon_params(fmt: str) -> Params:
    return params_with(data__amazon__categories=AMAZON_CATEGORIES, data__amazon__format=fmt)


def assert_normalized(df: pd.DataFrame, dataset: str) -> None:
    """Exactly the schema's columns, in order, with its dtypes; sorted by the keys; RangeIndex."""
    schema = columns_for(dataset)
    assert list(df.columns) == list(schema)
    assert {c: str(t) for c, t in df.dtypes.items()} == {c: str(pd.Series(dtype=t).dtype) for c, t in schema.items()}
    assert isinstance(df.index, pd.RangeIndex) and df.index.start == 0
    keys = list(zip(df["timestamp"], df["user_id"], df["item_id"]))
    assert keys == sorted(keys)


def expected_movielens() -> pd.DataFrame:
    """The ML sample as (user, item, rating, label, timestamp, scenario), in the normalized order."""
    rows = sorted(F.ML_RATINGS, key=lambda r: (r[3], r[0], r[1]))
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "rating": [float(r[2]) for r in rows],
            "label": [int(r[2] > 3) for r in rows],
            "timestamp": [r[3] for r in rows],
            "scenario": [F.ML_SCENARIOS[r[0]] for r in rows],
        }
    )


# ----------------------------------------------------------------------------------------------
# Good inputs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [F.write_ml100k_atomic, F.write_ml100k_original], ids=["atomic", "original"])
def test_ml100k_layouts_give_the_sample(tmp_path, writer):
    df = load_interactions("ml-100k", writer(tmp_path), params_with())
    assert_normalized(df, "ml-100k")
    key = list(expected_movielens().columns)
    pd.testing.assert_frame_equal(df[key], expected_movielens(), check_dtype=False)
    toy = df[df["item_id"] == "1"].iloc[0]
    assert (toy["title"], toy["year"], toy["genres"]) == ("Toy Story", 1995, "Animation|Children's|Comedy")
    assert df.loc[df["item_id"] == "3", "title"].iloc[0] == "Misérables, Les"  # latin-1 in u.item
    user4 = df[df["user_id"] == "4"].iloc[0]
    assert (user4["age"], user4["gender"], user4["occupation"], user4["zip"]) == (34, "F", "student", "01002")


def test_ml100k_atomic_and_original_agree(tmp_path):
    atomic = load_interactions("ml-100k", F.write_ml100k_atomic(tmp_path / "a"), params_with())
    original = load_interactions("ml-100k", F.write_ml100k_original(tmp_path / "o"), params_with())
    pd.testing.assert_frame_equal(atomic, original)


def test_ml1m_codes_become_groups_and_names(tmp_path):
    df = load_interactions("ml-1m", F.write_ml1m(tmp_path), params_with())
    assert_normalized(df, "ml-1m")
    key = list(expected_movielens().columns)
    pd.testing.assert_frame_equal(df[key], expected_movielens(), check_dtype=False)
    users = df.drop_duplicates("user_id").set_index("user_id")
    assert users["age"].to_dict() == {u: code for u, (code, _) in F.ML1M_USER_CODES.items()}
    assert users.loc["1", "occupation"] == "technician/engineer"
    assert users.loc["4", "occupation"] == "college/grad student"
    assert df.loc[df["item_id"] == "3", "title"].iloc[0] == "Misérables, Les"


def test_bookcrossing_drops_implicit_and_handles_ages(tmp_path):
    df = load_interactions("bookcrossing", F.write_bookcrossing(tmp_path), params_with())
    assert_normalized(df, "bookcrossing")
    explicit = [r for r in F.BX_RATINGS if r[2] != "0"]
    assert len(df) == len(explicit) and (df["timestamp"] == 0).all()
    assert sorted(zip(df["user_id"], df["item_id"], df["rating"], df["label"])) == sorted(
        (u, i, float(r), int(int(r) >= 5)) for u, i, r in explicit
    )
    assert dict(zip(df["user_id"], df["scenario"])) == F.BX_SCENARIOS
    users = df.drop_duplicates("user_id").set_index("user_id")
    assert users.loc["276726", "age"] == 23 and pd.isna(users.loc["276729", "age"])  # 230 is implausible
    books = df.drop_duplicates("item_id").set_index("item_id")
    assert pd.isna(books.loc["0446520802", "year"])  # year 0 = unknown
    assert books.loc["052165615X", "publisher"] == "Cambridge & Sons"  # HTML entity decoded
    assert books.loc["0155061224", "author"] == "Judith Rae"


@pytest.mark.parametrize("fmt", ["2014", "2018"])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_amazon_formats(tmp_path, fmt, gz):
    df = load_interactions("amazon", F.write_amazon(tmp_path, fmt, gz=gz), amazon_params(fmt))
    assert_normalized(df, "amazon")
    expected = sorted(
        (u, a, r, int(r > 3), t, category) for category, (reviews, _) in F.AMAZON.items() for u, a, r, t in reviews
    )
    key = df[["user_id", "item_id", "rating", "label", "timestamp", "scenario"]]
    assert sorted(key.itertuples(index=False, name=None)) == expected
    items = df.drop_duplicates("item_id").set_index("item_id")
    assert items.loc["B001GXRQW0", "category"] == "Gift Cards|Gift Card Categories"  # path order kept
    assert items.loc["B001GXRQW0", "title"] == "Amazon.com Gift Card"
    assert items.loc["B001GXRQW0", "price"] == ("25.0" if fmt == "2014" else "$25.00")
    assert pd.isna(items.loc["B004LLIKVU", "brand"]) and pd.isna(items.loc["B004LLIKVU", "price"])


def test_amazon_one_category_is_one_scenario(tmp_path):
    params = params_with(data__amazon__categories=["Gift_Cards"], data__amazon__format="2018")
    df = load_interactions("amazon", F.write_amazon(tmp_path, "2018"), params)
    assert set(df["scenario"]) == {"Gift_Cards"} and len(df) == len(F.AMAZON["Gift_Cards"][0])


@pytest.mark.parametrize(
    ("op", "threshold", "expected"),
    [(">=", 4, [0, 1, 0, 1, 0, 1]), ("<", 3, [1, 0, 0, 0, 1, 0]), ("==", 5, [0, 1, 0, 0, 0, 0])],
)
def test_label_rule_comes_from_params(tmp_path, op, threshold, expected):
    params = params_with(**{"data__label_rules__ml-100k": {"op": op, "threshold": threshold}})
    df = load_interactions("ml-100k", F.write_ml100k_original(tmp_path), params)
    assert df["label"].tolist() == expected  # rows in (timestamp, user, item) order: ratings 1,5,3,4,2,4


def test_title_year_quirks():
    land = "Land Before Time III: The Time of the Great Giving"
    titles = pd.Series(["Toy Story (1995)", f"{land} (1995) (V)", "Seven (Se7en)", "unknown"])
    stripped, years = split_title_year(titles)
    assert stripped.tolist() == ["Toy Story", f"{land} (V)", "Seven (Se7en)", "unknown"]
    assert years.tolist() == [1995, 1995, pd.NA, pd.NA]


def test_atomic_release_year_that_is_not_a_year_falls_back_to_the_title(tmp_path):
    raw = F.write_ml100k_atomic(tmp_path)
    item = raw / "ml-100k.item"
    item.write_text(item.read_text().replace("1\tToy Story\t1995", "1\tToy Story (1995)\tV"))
    df = load_interactions("ml-100k", raw, params_with())
    toy = df[df["item_id"] == "1"].iloc[0]
    assert (toy["title"], toy["year"]) == ("Toy Story", 1995)


# ----------------------------------------------------------------------------------------------
# Bad inputs: DataError naming the file and the problem
# ----------------------------------------------------------------------------------------------


def raises_data_error(dataset: str, raw_dir: Path, *fragments: str, params: Params | None = None) -> str:
    """Load and assert a DataError whose message contains every fragment; return the message."""
    with pytest.raises(DataError) as info:
        load_interactions(dataset, raw_dir, params or params_with())
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_missing_file_is_named(tmp_path):
    raw = F.write_ml100k_original(tmp_path)
    (raw / "u.user").unlink()
    raises_data_error("ml-100k", raw, str(raw / "u.user"), "file not found", "u.data, u.user, u.item")


def test_no_raw_files_lists_what_is_expected(tmp_path):
    raises_data_error("ml-100k", tmp_path, str(tmp_path), "ml-100k.inter", "u.data", "llm4ctr fetch")


def test_empty_file(tmp_path):
    raw = F.write_ml1m(tmp_path)
    (raw / "ratings.dat").write_bytes(b"")
    raises_data_error("ml-1m", raw, str(raw / "ratings.dat"), "file is empty")


def test_header_only_file(tmp_path):
    raw = F.write_ml100k_atomic(tmp_path)
    (raw / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    raises_data_error("ml-100k", raw, str(raw / "ml-100k.inter"), "no data rows")


def test_wrong_delimiter(tmp_path):
    raw = F.write_ml100k_original(tmp_path)
    (raw / "u.data").write_text("".join(",".join(map(str, r)) + "\n" for r in F.ML_RATINGS))
    raises_data_error(
        "ml-100k", raw, str(raw / "u.data"), "expected 4 tab-separated fields, found 1 in line 1", "6 such line(s)"
    )


def test_wrong_field_count_on_one_line(tmp_path):
    raw = F.write_ml1m(tmp_path)
    with (raw / "users.dat").open("a", encoding="latin-1") as out:
        out.write("9::M::25::4\n")
    raises_data_error("ml-1m", raw, str(raw / "users.dat"), "expected 5 '::'-separated fields, found 4 in line 5")


def test_missing_column(tmp_path):
    raw = F.write_ml100k_atomic(tmp_path)
    inter = raw / "ml-100k.inter"
    inter.write_text(inter.read_text().replace("rating:float", "score:float"))
    raises_data_error("ml-100k", raw, str(inter), "missing column 'rating'")


def test_missing_column_from_a_comma_separated_csv(tmp_path):
    raw = F.write_bookcrossing(tmp_path)
    ratings = raw / "BX-Book-Ratings.csv"
    ratings.write_text(ratings.read_text(encoding="latin-1").replace(";", ","), encoding="latin-1")
    raises_data_error("bookcrossing", raw, str(ratings), "missing column 'User-ID'", "';'-separated")


def test_non_numeric_rating_names_values_and_lines(tmp_path):
    ratings = [*F.ML_RATINGS]
    ratings[2] = ("3", "2", "abc", 881250950)
    ratings[4] = ("1", "2", "", 881250951)
    raw = F.write_ml100k_original(tmp_path, ratings=ratings)
    raises_data_error(
        "ml-100k", raw, str(raw / "u.data"), "column 'rating'", "2 non-numeric", "'abc' (line 3)", "'' (line 5)"
    )


def test_non_numeric_rating_in_json(tmp_path):
    raw = F.write_amazon(tmp_path, "2018", gz=False)
    path = raw / "Gift_Cards.json"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"overall": 2.0', '"overall": "two"')
    path.write_text("\n".join(lines) + "\n")
    raises_data_error("amazon", raw, str(path), "column 'overall'", "'two' (line 2)", params=amazon_params("2018"))


def test_empty_id(tmp_path):
    ratings = [*F.ML_RATINGS]
    ratings[1] = ("", "1", 5, 881250949)
    raw = F.write_ml1m(tmp_path, ratings=ratings)
    raises_data_error("ml-1m", raw, str(raw / "ratings.dat"), "column 'user_id'", "empty/NaN", "(line 2)")


def test_nan_id_in_json(tmp_path):
    raw = F.write_amazon(tmp_path, "2014", gz=False)
    path = raw / "reviews_Gift_Cards.json"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[2]["asin"] = None
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    raises_data_error("amazon", raw, str(path), "column 'asin'", "(line 3)", params=amazon_params("2014"))


def test_nan_token_id(tmp_path):
    ratings = [*F.BX_RATINGS, ("NaN", "0155061224", "8")]
    raw = F.write_bookcrossing(tmp_path, ratings=ratings)
    raises_data_error("bookcrossing", raw, str(raw / "BX-Book-Ratings.csv"), "column 'User-ID'", "'NaN' (line 7)")


def test_unknown_user_and_item_are_errors_with_examples(tmp_path):
    strangers = [("99", "1", 4, 881250999), ("98", "2", 4, 881250999)]
    raw = F.write_ml100k_original(tmp_path, ratings=[*F.ML_RATINGS, *strangers])
    raises_data_error(
        "ml-100k", raw, str(raw / "u.data"), "2 of 8 rows", "user_id missing from", str(raw / "u.user"), "'99' (line 7)"
    )
    raw = F.write_ml1m(tmp_path / "1m", ratings=[*F.ML_RATINGS, ("1", "77", 4, 881250999)])
    raises_data_error("ml-1m", raw, str(raw / "ratings.dat"), "item_id missing from", str(raw / "movies.dat"), "'77'")


def test_unknown_references_can_be_dropped_by_param(tmp_path):
    raw = F.write_bookcrossing(tmp_path, ratings=[*F.BX_RATINGS, ("276726", "9999999999", "9")])
    raises_data_error("bookcrossing", raw, "ISBN missing from", "'9999999999'")
    df = load_interactions("bookcrossing", raw, params_with(data__missing_references="drop"))
    assert "9999999999" not in set(df["item_id"]) and len(df) == 4
    with pytest.raises(ParamsError, match="data.missing_references"):
        load_interactions("bookcrossing", raw, params_with(data__missing_references="ignore"))


def test_duplicate_user_in_user_file(tmp_path):
    raw = F.write_ml100k_original(tmp_path)
    with (raw / "u.user").open("a") as out:
        out.write("2|40|M|doctor|12345\n")
    raises_data_error("ml-100k", raw, str(raw / "u.user"), "user_id appears more than once", "'2' (line 2)", "(line 5)")


def test_ml1m_unknown_age_code(tmp_path):
    raw = F.write_ml1m(tmp_path)
    users = raw / "users.dat"
    users.write_text(users.read_text(encoding="latin-1").replace("2::F::50::", "2::F::52::"), encoding="latin-1")
    raises_data_error("ml-1m", raw, str(users), "ML-1M age codes", "'52' (line 2)")


def test_non_numeric_genre_flag(tmp_path):
    raw = F.write_ml100k_original(tmp_path)
    item = raw / "u.item"
    lines = item.read_text(encoding="latin-1").splitlines()
    lines[1] = lines[1][:-1] + "x"
    item.write_text("\n".join(lines) + "\n", encoding="latin-1")
    raises_data_error("ml-100k", raw, str(item), "column 'Western'", "'x' (line 2)")


def test_bad_encoding_names_the_line(tmp_path):
    raw = F.write_ml100k_atomic(tmp_path)
    item = raw / "ml-100k.item"
    item.write_bytes(item.read_text().encode("latin-1"))  # 'Misérables' as latin-1 in a UTF-8 file
    raises_data_error("ml-100k", raw, str(item), "line 4 is not valid utf-8")


def test_amazon_missing_key(tmp_path):
    raw = F.write_amazon(tmp_path, "2018", gz=False)
    path = raw / "Gift_Cards.json"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "overall"}) + "\n" for r in records))
    raises_data_error("amazon", raw, str(path), "missing key 'overall'", params=amazon_params("2018"))


def test_amazon_unparsable_line(tmp_path):
    raw = F.write_amazon(tmp_path, "2014", gz=False)
    meta = raw / "meta_Gift_Cards.json"
    meta.write_text(meta.read_text() + "{'asin': 'B0', 'title': __import__('os').getcwd()}\n")
    message = "line 3 is neither JSON nor a Python literal"  # and the code in it never ran
    raises_data_error("amazon", raw, str(meta), message, params=amazon_params("2014"))


def test_amazon_truncated_gzip(tmp_path):
    raw = F.write_amazon(tmp_path, "2018", gz=True)
    path = raw / "meta_Gift_Cards.json.gz"
    path.write_bytes(path.read_bytes()[:-12])
    raises_data_error("amazon", raw, str(path), "truncated or corrupt", params=amazon_params("2018"))


def test_amazon_empty_gzip(tmp_path):
    raw = F.write_amazon(tmp_path, "2018", gz=True)
    path = raw / "Magazine_Subscriptions.json.gz"
    path.write_bytes(gzip.compress(b""))
    raises_data_error("amazon", raw, str(path), "file is empty", params=amazon_params("2018"))


def test_amazon_missing_category_file(tmp_path):
    raw = F.write_amazon(tmp_path, "2014", gz=True)
    (raw / "meta_Magazine_Subscriptions.json.gz").unlink()
    missing = raw / "meta_Magazine_Subscriptions.json.gz"
    raises_data_error("amazon", raw, str(missing), "file not found", params=amazon_params("2014"))


def test_bad_params_are_params_errors(tmp_path):
    with pytest.raises(ParamsError, match="unknown dataset 'ml-20m'"):
        load_interactions("ml-20m", tmp_path, params_with())
    with pytest.raises(ParamsError, match="data.amazon.format"):
        load_interactions("amazon", tmp_path, params_with(data__amazon__format="2020"))
    with pytest.raises(ParamsError, match="data.amazon.categories"):
        load_interactions("amazon", tmp_path, params_with(data__amazon__categories="Gift_Cards"))
    raw = F.write_ml1m(tmp_path)
    with pytest.raises(ParamsError, match=r"data.label_rules.ml-1m.op"):
        load_interactions("ml-1m", raw, params_with(**{"data__label_rules__ml-1m": {"op": "=>", "threshold": 3}}))
    with pytest.raises(ParamsError, match=r"data.label_rules.ml-1m.threshold"):
        load_interactions("ml-1m", raw, params_with(**{"data__label_rules__ml-1m": {"op": ">", "threshold": "3"}}))
