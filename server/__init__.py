"""The mfms-bo service: studies, trials and measurements behind a REST API.

Its wire contract (request/response models, the typed client) lives in :mod:`mfms_client`,
which the workers use too; the server never imports the workers.
"""
