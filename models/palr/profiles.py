"""LLM-written user profiles, generated once per distinct prompt and cached by content.

The cache is a JSON-lines file: one line per profile, keyed by sha256 of (model id, generation
settings, prompt text), appended and flushed as each is written, so a killed run resumes where it
stopped and a second run with the same prompts makes no LLM call. A torn last line (a kill mid-write)
is ignored and regenerated.

Under torchrun the missing prompts are shared out over the processes; each appends its lines to the
cache (one ``write`` per line, so ranks on one machine do not tear each other's lines), the profiles
are gathered on every rank, and rank 0 appends the ones its file lacks (ranks on other machines).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from llm4ctr.progress import bar
from models.distributed import Processes


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
        self,
        prompts: Iterable[str],
        generate: Callable[[str], tuple[str, int]],
        progress: bool = False,
        processes: Processes | None = None,
    ) -> dict[str, dict]:
        """prompt -> {"profile", "prompt_tokens"} for every prompt, generating only those not cached
        (``processes``: share them out, default torchrun's environment)."""
        processes = processes or Processes.from_env()
        prompts = list(dict.fromkeys(prompts))
        missing = processes.broadcast([p for p in prompts if self.key(p) not in self.entries])
        if missing:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if processes.is_main and self.path.is_file() and not self.path.read_bytes().endswith(b"\n"):
                self._append(["\n"])  # end a line cut short by a killed run before appending
            processes.barrier()
            made = []
            for prompt in bar(processes.part(missing), enabled=progress, desc="profiles", unit="user"):
                text, tokens = generate(prompt)
                made.append({"key": self.key(prompt), "profile": text, "prompt_tokens": tokens})
                self._append([json.dumps(made[-1]) + "\n"])
            gathered = [entry for share in processes.gather(made) for entry in share]
            self.calls += len(gathered)
            if processes.is_main and processes.world > 1:
                on_disk = set(ProfileCache(self.path, "", {}).entries)
                self._append([json.dumps(e) + "\n" for e in gathered if e["key"] not in on_disk])
            self.entries.update((entry["key"], entry) for entry in gathered)
        return {p: self.entries[self.key(p)] for p in prompts}

    def _append(self, lines: list[str]) -> None:
        """Append each line with one ``write`` call (O_APPEND) and sync it to disk."""
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for line in lines:
                os.write(descriptor, line.encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
