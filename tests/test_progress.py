"""Progress output suits where it goes: live bars on a terminal, a few plain lines in a log file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import logging, os
    from llm4ctr.progress import bar, configure_output
    configure_output()
    for epoch in bar(range(3), desc="epochs"):
        for _ in bar(range(2000), desc=f"epoch {epoch}", leave=False):
            pass
        logging.getLogger("models.trainer").info("epoch %d: valid AUC 0.7", epoch)
    logging.getLogger("transformers").info("library chatter stays at the library's level")
    from tqdm.auto import tqdm
    for _ in tqdm(range(500), desc="a library's own bar"):  # e.g. transformers' GGUF conversion
        pass
    print(os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"))
""")


def test_output_to_a_log_file_is_one_line_per_epoch_without_bar_redraws(tmp_path):
    log = tmp_path / "run.log"
    with log.open("w") as handle:  # a file, not a terminal: what `make run > run.log` and CI see
        subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, check=True, timeout=60
        )
    text = log.read_text()
    assert "\r" not in text and "%|" not in text  # no tqdm redraws
    epoch_lines = [line for line in text.splitlines() if "models.trainer: epoch" in line]
    assert len(epoch_lines) == 3 and "library chatter" not in text
    assert text.splitlines()[-1] == "1"  # Hugging Face bars (model loading) are off too
