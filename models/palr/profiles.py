"""LLM-written user profiles, generated once per distinct prompt and cached by content.

The cache is a JSON-lines file: one line per profile, keyed by sha256 of (model id, generation
settings, prompt text), appended and flushed as each is written, so a killed run resumes where it
stopped and a second run with the same prompts makes no LLM call. A torn last line (a kill mid-write)
is ignored and regenerated.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from llm4ctr.progress import bar


class ProfileCache:
    """Profiles of one model and one set of generation settings, stored in ``path``."""

    def __init__(self, path: Path, model_id: str, settings: dict):
        self.path = Path(path)
        self.namespace = json.dumps([model_id, settings], sort_keys=True)
        self.calls = 0  # LLM calls made through this object
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a killed run
                self.entries[entry["key"]] = entry

    def key(self, prompt: str) -> str:
        return hashlib.sha256((self.namespace + "\x00" + prompt).encode()).hexdigest()

    def fill(
        self, prompts: Iterable[str], generate: Callable[[str], tuple[str, int]], progress: bool = False
    ) -> dict[str, dict]:
        """prompt -> {"profile", "prompt_tokens"} for every prompt, generating only those not cached."""
        prompts = list(dict.fromkeys(prompts))
        missing = [p for p in prompts if self.key(p) not in self.entries]
        if missing:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                if handle.tell() and not self.path.read_bytes().endswith(b"\n"):
                    handle.write("\n")  # end a line cut short by a killed run before appending
                for prompt in bar(missing, enabled=progress, desc="profiles", unit="user"):
                    text, tokens = generate(prompt)
                    self.calls += 1
                    entry = {"key": self.key(prompt), "profile": text, "prompt_tokens": tokens}
                    handle.write(json.dumps(entry) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                    self.entries[entry["key"]] = entry
        return {p: self.entries[self.key(p)] for p in prompts}
