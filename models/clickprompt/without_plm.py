"""Finetuning WITHOUT the PLM: the CTR model alone, initialised from PA-MLM pre-training.

PA-MLM trains the CTR model jointly with the PLM, so its embeddings and interaction layers come out
aware of the text's semantics. This path keeps only that CTR model: the object returned here is the
plain zoo class (same ``build_config``), so :class:`models.trainer.Trainer` finetunes it on the CTR
label and writes an ordinary zoo checkpoint that ``models.trainer.load_model`` reads -- same class,
same parameters, same inference cost as the model trained from scratch, ready for serving.
The output layer over ``q`` takes no gradient during PA-MLM (only ``q`` feeds the prompts), so it
starts finetuning at its initial values.
"""

from __future__ import annotations

from pathlib import Path

from models.clickprompt.network import CTR_DIR
from models.ctr import CTRModel
from models.trainer import load_model


def pretrained_ctr(checkpoint: str | Path) -> CTRModel:
    """The CTR model of a ClickPrompt checkpoint (``ClickPromptNet.save``), in training mode."""
    return load_model(Path(checkpoint) / CTR_DIR).train()
