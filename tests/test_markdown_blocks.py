"""replace_block: generated figures inside hand-written markdown (evaluate stage, bench scripts)."""

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
