"""The BentoML shell of the CTR-only path: the service (service.py), its request schemas and guard,
its start-up settings and Prometheus counters, the launcher, and a Locust load test (locustfile.py).
What it shares with the pipeline lives below it: the predictor (encoder + model) in
``models.predictor``, the prediction log that drift and the Dagster sensor read in
``assets.prediction_log``, and the model store registration in ``assets.bento_store``, so no pipeline
module imports this package.
"""
