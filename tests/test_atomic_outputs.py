"""Atomic outputs: marked markdown blocks (evaluate stage, bench scripts) and safetensors files."""

from llm4ctr.atomic import replace_block


def test_appends_then_replaces_only_its_own_block(tmp_path):
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\n\nhand-written intro\n")
    replace_block(doc, "bench a", "| x |\n|---|\n| 1 |\n")
    replace_block(doc, "bench b", "b1")
    assert doc.read_text() == ("# Results\n\nhand-written intro\n\n<!-- BEGIN bench a -->\n| x |\n|---|\n| 1 |\n"
                               "<!-- END bench a -->\n\n<!-- BEGIN bench b -->\nb1\n<!-- END bench b -->\n")
    doc.write_text(doc.read_text().replace("hand-written intro", "edited by hand"))
    replace_block(doc, "bench a", "| x |\n|---|\n| 2 |")
    text = doc.read_text()
    assert "edited by hand" in text and "| 2 |" in text and "| 1 |" not in text
    assert text.count("BEGIN bench a") == 1 and text.endswith("<!-- BEGIN bench b -->\nb1\n<!-- END bench b -->\n")


def test_creates_a_missing_file(tmp_path):
    doc = tmp_path / "docs" / "NEW.md"
    replace_block(doc, "x", "body\n")
    assert doc.read_text() == "<!-- BEGIN x -->\nbody\n<!-- END x -->\n"


def test_saved_tensors_get_the_usual_file_mode(tmp_path):
    """safetensors itself creates 0600 files; artifacts must be readable like any other output."""
    import os

    import torch

    from llm4ctr.atomic import save_tensors

    old = os.umask(0o022)
    try:
        save_tensors({"a": torch.zeros(2)}, tmp_path / "x.safetensors", metadata={"k": "v"})
    finally:
        os.umask(old)
    assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
