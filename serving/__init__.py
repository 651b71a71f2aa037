"""The BentoML service of the CTR-only path (service.py), its request schemas and guard, the shared
predictor (encoder + model) and the prediction log the drift stage reads.

Imports stay in the submodules: ``serving.predictor`` and ``serving.prediction_log`` are used by the
pipeline stages without loading bentoml.
"""
