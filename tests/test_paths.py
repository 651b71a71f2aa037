"""llm4ctr.paths.portable / located: how an artifact records a path, and how it is read back."""

from __future__ import annotations

from llm4ctr.paths import located, portable


def test_a_path_inside_the_project_is_recorded_relative_and_found_in_a_moved_project(tmp_path):
    root = tmp_path / "project"
    checkpoint = root / "artifacts" / "clickprompt_pretrain" / "ml-100k" / "layerwise"
    recorded = portable(checkpoint, root)
    assert recorded == "artifacts/clickprompt_pretrain/ml-100k/layerwise"
    assert (
        located(recorded, tmp_path / "moved")
        == tmp_path / "moved" / "artifacts" / "clickprompt_pretrain" / "ml-100k" / "layerwise"
    )
    assert portable(str(checkpoint), root) == recorded  # a str like a Path


def test_a_symlinked_project_root_still_gives_relative_paths(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert portable(tmp_path / "real" / "artifacts" / "x", tmp_path / "link") == "artifacts/x"
    assert portable(tmp_path / "link" / "artifacts" / "x", tmp_path / "real") == "artifacts/x"


def test_paths_outside_the_project_and_model_names_are_kept_as_they_are(tmp_path):
    root = tmp_path / "project"
    cache = tmp_path / "cache" / "models" / "all-MiniLM-L6-v2"
    assert portable(cache, root) == str(cache)
    assert portable(tmp_path / "project2" / "artifacts", root) == str(tmp_path / "project2" / "artifacts")
    assert portable("all-MiniLM-L6-v2", root) == "all-MiniLM-L6-v2"
    assert located(str(cache), root) == cache  # an absolute path (outside, or an older artifact): as it is
