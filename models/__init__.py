"""Torch code only: feature encoding, layers, the CTR model zoo, the trainer and metrics.

Nothing here imports dagster, dvc, bentoml, ``assets``, ``orchestration`` or ``serving``; those
import this package. Import from the submodules (this file stays empty so that, e.g.,
``models.metrics`` does not pay for loading every model):

* ``models.features`` — ``FeatureSpec``, ``default_spec``, ``FeatureEncoder`` (fit on train, JSON save/load)
* ``models.layers``   — shared building blocks (embeddings, MLP, interaction layers)
* ``models.ctr``      — FM, DNN, DeepFM, xDeepFM, IPNN, DCN, DCNv2, AutoInt, FiGNN, FGCNN; ``build_model``
* ``models.trainer``  — ``TrainConfig``, ``Trainer``, ``save_model``, ``load_model``
* ``models.metrics``  — ``auc``, ``logloss``, ``relaimpr``, ``longtail_mask``, ``segment_aucs``
"""
