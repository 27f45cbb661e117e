"""What every stage runs on: the one training loop (:mod:`~pose3d.runtime.train`), the params
schema (:mod:`~pose3d.runtime.params`), MLflow tracking (:mod:`~pose3d.runtime.tracking`, with
:mod:`~pose3d.runtime.mlflow_io` and the repo-relative artifact store
:mod:`~pose3d.runtime.mlflow_store`) and the stage wrapper (:mod:`~pose3d.runtime.cli`)."""
