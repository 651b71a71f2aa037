"""ClickPrompt (WWW 2024): CTR models as layer-wise soft-prompt generators for a PLM.

- :mod:`~models.clickprompt.prompt_generator`: q -> per-layer key/value prefixes, or input-layer prompts;
- :mod:`~models.clickprompt.fusion`: run a Hugging Face encoder with those prompts fused in;
- :mod:`~models.clickprompt.network`: CTR model + generator + encoder, tokenization, checkpoints;
- :mod:`~models.clickprompt.pamlm`: PA-MLM masking and loss (MLM head on masked positions only);
- :mod:`~models.clickprompt.pretrain`: the resumable PA-MLM loop;
- :mod:`~models.clickprompt.with_plm` / :mod:`~models.clickprompt.without_plm`: the two finetuning modes.
"""

from models.clickprompt.fusion import prompted_states, takes_prefix, text_position_ids
from models.clickprompt.network import ClickPromptNet, tokenize, trim_padding
from models.clickprompt.pamlm import PAMLM, load_masked_lm, mask_tokens, split_masked_lm
from models.clickprompt.pretrain import PretrainConfig, pretrain, total_steps
from models.clickprompt.prompt_generator import MODES, PromptGenerator
from models.clickprompt.with_plm import POOLINGS, ClickPromptWithPLM, pool
from models.clickprompt.without_plm import pretrained_ctr

__all__ = [
    "MODES",
    "PAMLM",
    "POOLINGS",
    "ClickPromptNet",
    "ClickPromptWithPLM",
    "PretrainConfig",
    "PromptGenerator",
    "load_masked_lm",
    "mask_tokens",
    "pool",
    "pretrain",
    "pretrained_ctr",
    "prompted_states",
    "split_masked_lm",
    "takes_prefix",
    "text_position_ids",
    "tokenize",
    "total_steps",
    "trim_padding",
]
