"""Great Expectations suites: good tables and splits pass; each kind of bad data fails with a summary
that names the table, the expectation, the column and the offending rows. Every validation, pass or
fail, by a stage or by its check, lands in the dataset's file-backed GX project and its Data Docs site,
and a failure names its Data Docs page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assets import ingest, split
from assets.schema import columns_for
from assets.tables import write_table
from assets.validation import enforce, raw_suite, validate_raw, validate_split
from llm4ctr.errors import ParamsError, ValidationFailed
from llm4ctr.paths import artifact_dir, failure_path, gx_dir
from tests.fixtures_params import project_params
from tests.fixtures_tables import make_interactions

USERS, PER_USER = 20, 10  # 200 rows; 10 per user so a per-user 8/1/1 split is exact
RUN = "test"  # the GX run name of the suite tests' validations
SITE = Path("uncommitted") / "data_docs" / "local_site"  # the Data Docs site inside a GX project


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """One GX project folder for the suite tests of this module (it keeps every validation)."""
    return tmp_path_factory.mktemp("gx")


def movielens(n_users: int = USERS, per_user: int = PER_USER) -> pd.DataFrame:
    """A valid MovieLens-like normalized table with exactly the schema's columns and dtypes."""
    rng = np.random.default_rng(0)
    n = n_users * per_user
    user = np.repeat(np.arange(n_users), per_user)
    age = np.repeat(rng.integers(18, 60, n_users), per_user)
    rating = rng.integers(1, 6, n).astype("float64")
    values = {
        "user_id": [f"u{u}" for u in user],
        "item_id": [f"i{i}" for i in rng.permutation(n)],
        "rating": rating,
        "label": (rating > 3).astype("int64"),
        "timestamp": 880_000_000 + rng.permutation(n).astype("int64") * 60,
        "scenario": np.select([age < 25, age < 35], ["age<25", "age25-34"], "age>=35"),
        "gender": np.repeat(rng.choice(["M", "F"], n_users), per_user),
        "age": age,
        "occupation": "writer",
        "zip": "12345",
        "title": [f"Movie {i}" for i in range(n)],
        "genres": "Comedy|Drama",
        "year": rng.integers(1950, 1999, n),
    }
    return pd.DataFrame(values).astype(columns_for("ml-100k"))


def split_by(df: pd.DataFrame, method: str, ratios=(0.8, 0.1, 0.1)) -> dict[str, pd.DataFrame]:
    """Split ``df`` the way the split stage should: shuffled, by global time, or by time per user."""
    if method == "user_time":
        ordered = df.sort_values(["user_id", "timestamp"])
        position = ordered.groupby("user_id").cumcount() / ordered.groupby("user_id")["user_id"].transform("size")
        part = np.select([position < ratios[0], position < ratios[0] + ratios[1]], ["train", "valid"], "test")
        return {name: ordered[part == name].reset_index(drop=True) for name in ("train", "valid", "test")}
    ordered = df.sample(frac=1, random_state=1) if method == "random" else df.sort_values("timestamp")
    cut1, cut2 = int(len(df) * ratios[0]), int(len(df) * (ratios[0] + ratios[1]))
    parts = {"train": ordered[:cut1], "valid": ordered[cut1:cut2], "test": ordered[cut2:]}
    return {name: part.reset_index(drop=True) for name, part in parts.items()}


def assert_fails(report, *needles: str) -> str:
    """The report failed and one summary line contains all ``needles``; return that line."""
    assert not report.success
    failures = report.summary.splitlines()[1:]
    lines = [line for line in failures if all(n in line for n in needles)]
    assert lines, f"no summary line with {needles}:\n{report.summary}"
    return lines[0]


def test_good_table_passes(project):
    report = validate_raw(movielens(), "ml-100k", project, RUN)
    assert report.success, report.summary
    assert report.summary.startswith("all ")
    stats = report.statistics["raw 'ml-100k'"]
    assert stats["evaluated_expectations"] == len(raw_suite("ml-100k").expectations)
    assert stats["unsuccessful_expectations"] == 0


@pytest.mark.parametrize("method", ["random", "global_time", "user_time"])
def test_good_split_passes(project, method):
    report = validate_split(split_by(movielens(), method), "ml-100k", method, project, RUN)
    assert report.success, report.summary
    expected = {"split 'train'", "split 'valid'", "split 'test'", "split shares", "split overlap"}
    if method != "random":
        expected.add(f"split order ({method})")
    assert set(report.results) == expected


@pytest.mark.parametrize(("dataset", "top"), [("ml-100k", 5), ("ml-1m", 5), ("bookcrossing", 10), ("amazon", 5)])
def test_suite_per_dataset(dataset, top):
    configs = [e.configuration.to_json_dict() for e in raw_suite(dataset).expectations]
    by_type = {(c["type"], c["kwargs"].get("column")): c["kwargs"] for c in configs}
    assert by_type[("expect_table_columns_to_match_ordered_list", None)]["column_list"] == list(columns_for(dataset))
    assert by_type[("expect_column_values_to_be_between", "rating")]["max_value"] == top
    types = {column: kw["type_"] for (kind, column), kw in by_type.items() if kind == "expect_column_type_to_be"}
    assert types == columns_for(dataset)


def test_rating_out_of_range(project):
    df = movielens()
    df.loc[8, "rating"] = 6.0
    line = assert_fails(validate_raw(df, "ml-100k", project, RUN), "expect_column_values_to_be_between", '"rating"')
    assert "max_value=5" in line and "examples: [6.0] at rows [8]" in line


def test_label_outside_set(project):
    df = movielens()
    df.loc[[3, 7], "label"] = [2, -1]
    line = assert_fails(
        validate_raw(df, "ml-100k", project, RUN), "raw 'ml-100k'", "expect_column_values_to_be_in_set", '"label"'
    )
    assert "failed on 2 of 200 rows" in line
    assert "examples: [2, -1] at rows [3, 7]" in line


def test_label_outside_set_in_one_split_names_the_split(project):
    splits = split_by(movielens(), "random")
    splits["valid"].loc[0, "label"] = 5
    report = validate_split(splits, "ml-100k", "random", project, RUN)
    assert_fails(report, "split 'valid'", "expect_column_values_to_be_in_set", '"label"', "failed on 1 of 20 rows")
    assert len(report.summary.splitlines()) == 2  # the header and the one failure


def test_duplicate_rows(project):
    df = movielens()
    df = pd.concat([df, df.iloc[[4]]], ignore_index=True)
    line = assert_fails(validate_raw(df, "ml-100k", project, RUN), "expect_compound_columns_to_be_unique")
    assert "failed on 2 of 201 rows" in line
    assert df.loc[4, "item_id"] in line


def test_missing_ids(project):
    df = movielens()
    df.loc[5, "user_id"] = pd.NA
    df.loc[6, "item_id"] = None
    report = validate_raw(df, "ml-100k", project, RUN)
    assert "at rows [5]" in assert_fails(report, "expect_column_values_to_not_be_null", '"user_id"')
    assert "at rows [6]" in assert_fails(report, "expect_column_values_to_not_be_null", '"item_id"')


@pytest.mark.parametrize(("column", "dtype", "expected"), [("user_id", "object", "string"), ("age", "int64", "Int64")])
def test_wrong_dtype(project, column, dtype, expected):
    df = movielens().astype({column: dtype})
    line = assert_fails(validate_raw(df, "ml-100k", project, RUN), "expect_column_type_to_be", f'"{column}"')
    assert f'type_="{expected}"' in line
    assert f'observed "{dtype}"' in line


def test_missing_column(project):
    report = validate_raw(movielens().drop(columns="zip"), "ml-100k", project, RUN)
    assert_fails(report, "expect_table_columns_to_match_ordered_list", '"Expected": "zip"')
    assert_fails(report, "expect_column_type_to_be", '"zip"', "could not run", "does not exist")


def test_gender_outside_set(project):
    df = movielens()
    df.loc[10, "gender"] = "X"
    line = assert_fails(validate_raw(df, "ml-100k", project, RUN), "expect_column_values_to_be_in_set", '"gender"')
    assert 'examples: ["X"] at rows [10]' in line


def test_empty_table(project):
    assert_fails(
        validate_raw(movielens().iloc[:0], "ml-100k", project, RUN),
        "expect_table_row_count_to_be_between",
        "observed 0",
    )


def test_split_without_key_columns_reports_instead_of_crashing(project):
    splits = split_by(movielens(), "user_time")
    splits["valid"] = splits["valid"].drop(columns="timestamp")
    report = validate_split(splits, "ml-100k", "user_time", project, RUN)
    assert_fails(report, "split 'valid'", "expect_table_columns_to_match_ordered_list")
    assert "split order (user_time)" not in report.results


def test_split_overlap(project):
    splits = split_by(movielens(), "random")
    splits["test"].iloc[0] = splits["train"].iloc[0]  # same size, so only the overlap is wrong
    report = validate_split(splits, "ml-100k", "random", project, RUN)
    line = assert_fails(report, "split overlap", "expect_compound_columns_to_be_unique", "failed on 2 of 200 rows")
    assert '"split": "train"' in line and '"split": "test"' in line
    assert report.statistics["split 'test'"]["unsuccessful_expectations"] == 0


def test_wrong_ratios(project):
    splits = split_by(movielens(), "random", ratios=(0.7, 0.2, 0.1))
    line = assert_fails(
        validate_split(splits, "ml-100k", "random", project, RUN), "split shares", "failed on 2 of 3 rows"
    )
    assert '"split": "train"' in line and '"split": "valid"' in line and '"split": "test"' not in line


def test_ratio_tolerance_is_inclusive(project):
    splits = split_by(movielens(), "random", ratios=(0.805, 0.095, 0.1))  # 161/19/20: 0.005 off
    assert validate_split(splits, "ml-100k", "random", project, RUN, tolerance=0.005).success
    assert not validate_split(splits, "ml-100k", "random", project, RUN, tolerance=0.004).success


def test_global_time_order_violation(project):
    splits = split_by(movielens(), "global_time")
    late, early = splits["train"]["timestamp"].max(), splits["valid"]["timestamp"].min()
    splits["train"].loc[0, "timestamp"] = splits["test"]["timestamp"].max() + 1
    line = assert_fails(validate_split(splits, "ml-100k", "global_time", project, RUN), "split order (global_time)")
    assert '"split": "valid"' in line and '"split": "test"' in line
    assert late < early  # the unmodified split was in order


def test_user_time_order_violation(project):
    splits = split_by(movielens(), "user_time")
    train, test = splits["train"], splits["test"]
    row = train.index[train["user_id"] == "u3"][0]
    train.loc[row, "timestamp"] = test.loc[test["user_id"] == "u3", "timestamp"].max() + 1
    line = assert_fails(validate_split(splits, "ml-100k", "user_time", project, RUN), "split order (user_time)")
    assert '"scope": "u3"' in line and "u4" not in line


def test_user_time_split_is_not_globally_ordered(project):
    splits = split_by(movielens(), "user_time")
    assert validate_split(splits, "ml-100k", "user_time", project, RUN).success
    assert_fails(validate_split(splits, "ml-100k", "global_time", project, RUN), "split order (global_time)")


def test_enforce_writes_json_and_passes(project, tmp_path):
    report = validate_raw(movielens(), "ml-100k", project, RUN)
    path = tmp_path / "out" / "raw.json"
    enforce(report, path)
    written = json.loads(path.read_text())
    assert written["success"] is True
    assert written["results"]["raw 'ml-100k'"]["statistics"] == report.statistics["raw 'ml-100k'"]


def test_enforce_raises_with_summary(project, tmp_path):
    df = movielens()
    df.loc[0, "label"] = 2
    report = validate_raw(df, "ml-100k", project, RUN)
    path = tmp_path / "raw.json"
    with pytest.raises(ValidationFailed) as caught:
        enforce(report, path)
    assert caught.value.summary == report.summary
    assert caught.value.result_path == str(path)
    assert str(path) in str(caught.value)
    written = json.loads(path.read_text())
    assert written["success"] is False and written["summary"] == report.summary


def test_bad_arguments(project):
    with pytest.raises(ParamsError, match="unknown dataset 'ml-20m'"):
        raw_suite("ml-20m")
    with pytest.raises(ParamsError, match="unknown method 'by_item'"):
        validate_split(split_by(movielens(), "random"), "ml-100k", "by_item", project, RUN)


# --- the file-backed GX project and its Data Docs ---------------------------------------------------


def site_links(index: Path, page: Path) -> bool:
    """Whether the Data Docs ``index`` lists ``page`` (the index holds each page's path relative to the site)."""
    return page.relative_to(index.parent).as_posix() in index.read_text(encoding="utf-8")


def page_text(page: Path) -> str:
    """A Data Docs page's text without its markup, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")).split())


def test_data_docs_list_passing_and_failing_validations_and_the_failure_names_its_page(tmp_path):
    folder = tmp_path / "gx"
    passed = validate_raw(movielens(), "ml-100k", folder, "ingest")
    bad = movielens()
    bad.loc[3, "label"] = 2
    failed = validate_raw(bad, "ml-100k", folder, "ingest")
    index = folder / SITE / "index.html"
    assert passed.data_docs == failed.data_docs == index and index.is_file()
    assert passed.pages.keys() == failed.pages.keys() == {"raw 'ml-100k'"}
    for report in (passed, failed):
        page = report.pages["raw 'ml-100k'"]
        assert page.is_file() and page.is_relative_to(folder / SITE / "validations") and site_links(index, page)
    assert passed.pages != failed.pages  # one page per validation run: the history stays
    assert failed.failed_pages() == list(failed.pages.values()) and passed.failed_pages() == []
    assert "Status: Failed" in page_text(failed.pages["raw 'ml-100k'"])
    assert "Status: Succeeded" in page_text(passed.pages["raw 'ml-100k'"])
    with pytest.raises(ValidationFailed) as caught:
        enforce(failed, tmp_path / "raw.json")
    page = str(failed.pages["raw 'ml-100k'"])
    assert caught.value.docs_pages == [page] and f"Data Docs: {page}" in str(caught.value)
    assert (folder / "great_expectations.yml").read_text(encoding="utf-8").count("analytics_enabled: false") == 1


def test_a_failed_split_names_only_the_failed_tables_pages(project):
    splits = split_by(movielens(), "random")
    splits["valid"].loc[0, "label"] = 5
    report = validate_split(splits, "ml-100k", "random", project, RUN)
    assert set(report.pages) == set(report.results)  # every table of the run has its page
    assert report.failed_pages() == [report.pages["split 'valid'"]]
    assert len({page.parent for page in report.pages.values() if "raw-ml-100k" in page.parts}) == 1  # one run


def test_each_folder_is_its_own_project(tmp_path):
    a = validate_raw(movielens(), "ml-100k", tmp_path / "a", "ingest")
    b = validate_raw(movielens().iloc[:50], "ml-100k", tmp_path / "b", "ingest")
    assert site_links(a.data_docs, a.pages["raw 'ml-100k'"]) and site_links(b.data_docs, b.pages["raw 'ml-100k'"])
    assert len(list((tmp_path / "a" / "uncommitted" / "validations").rglob("*.json"))) == 1
    assert len(list((tmp_path / "b" / "uncommitted" / "validations").rglob("*.json"))) == 1


def test_stage_and_check_validations_share_the_datasets_data_docs(tmp_path):
    root, dataset = tmp_path / "project", "ml-100k"
    params = project_params({"data.name": dataset, "split.method": "random"})
    table = make_interactions(n_users=100, n_items=400, per_user=20, scenarios="age")
    artifact_dir(root, "ingest", dataset).mkdir(parents=True)
    write_table(table, artifact_dir(root, "ingest", dataset) / ingest.TABLE)
    index = gx_dir(root, dataset) / SITE / "index.html"

    checked = ingest.check(params, root)
    metadata = split.run(params, root)
    resplit = split.check(params, root)
    assert checked.success and resplit.success
    assert metadata["data_docs_path"] == index.relative_to(root).as_posix()
    stage_pages = [root / page for page in metadata["data_docs_pages"].values()]
    check_pages = [*checked.pages.values(), *resplit.pages.values()]
    assert len(stage_pages) == 5 and len(check_pages) == 6
    assert all(page.is_file() and site_links(index, page) for page in stage_pages + check_pages)
    assert {page.parts[-3] for page in stage_pages} == {"split"}  # the GX run names
    assert {page.parts[-3] for page in check_pages} == {"ingest-check", "split-check"}
    assert checked.docs_metadata(root)["data_docs_path"] == metadata["data_docs_path"]

    table.loc[7, "label"] = 2  # a bad row: whichever split gets it fails the stage
    write_table(table, artifact_dir(root, "ingest", dataset) / ingest.TABLE)
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_in_set") as caught:
        split.run(params, root)
    [page] = caught.value.docs_pages
    assert Path(page).is_file() and site_links(index, Path(page)) and f"Data Docs: {page}" in str(caught.value)
    assert str(failure_path(root, "split", dataset)) in str(caught.value)
