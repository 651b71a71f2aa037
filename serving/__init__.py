"""The BentoML shell of the CTR-only path: the service (service.py), its request schemas and guard,
and the launcher. What it shares with the pipeline lives below it: the predictor (encoder + model) in
``models.predictor`` and the prediction log that drift and the Dagster sensor read in
``assets.prediction_log``, so no pipeline module imports this package.
"""
