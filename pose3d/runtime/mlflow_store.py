"""Artifact locations relative to the repo: ``pose3d:<path>`` instead of an absolute
``file://`` URI, so a moved or copied clone's MLflow UI and ``load_model`` read that clone's own
files rather than another folder's.

:mod:`pose3d.runtime.tracking` creates the experiments of a local SQLite store with the artifact
location ``pose3d:mlartifacts``; :class:`RepoArtifactRepository` resolves ``pose3d:<path>``
against the folder of the SQLite database (``<repo>/mlflow.db``). MLflow finds the class
through the ``mlflow.artifact_repository`` entry point in pyproject.toml (in the client and in
``mlflow server``), so this module imports no more of MLflow than the local repository it
extends (it is loaded while MLflow registers its artifact stores).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import mlflow
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

#: the URI scheme of repo-relative artifact locations (``pose3d:mlartifacts/1/<run>/artifacts``)
SCHEME = "pose3d"
#: experiments of a local store keep their artifacts here, beside mlflow.db
ARTIFACT_LOCATION = f"{SCHEME}:mlartifacts"
#: where ``mlflow server`` passes its ``--backend-store-uri`` to its workers
#: (mlflow.server.constants.BACKEND_STORE_URI_ENV_VAR; not imported: that loads the server)
_SERVER_STORE_ENV = "_MLFLOW_SERVER_FILE_STORE"


def store_folder(tracking_uri: str | None = None) -> Path:
    """The folder ``pose3d:`` paths are relative to: that of the SQLite database in use (the
    given tracking URI, the one an ``mlflow server`` serves, or the client's), else the
    current directory."""
    uri = tracking_uri or os.environ.get(_SERVER_STORE_ENV) or mlflow.get_tracking_uri()
    if uri and uri.startswith("sqlite:///"):
        return Path(unquote(uri[len("sqlite:///"):].split("?")[0])).resolve().parent
    return Path.cwd().resolve()


def is_local_store(tracking_uri: str) -> bool:
    """A store whose artifacts pose3d keeps in the repo (a SQLite file)."""
    return tracking_uri.startswith("sqlite:///")


class RepoArtifactRepository(LocalArtifactRepository):
    """Local files addressed ``pose3d:<path relative to the store's folder>``."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None,
                 registry_uri: str | None = None) -> None:
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        rel = artifact_uri[len(SCHEME) + 1:].lstrip("/") if artifact_uri.startswith(f"{SCHEME}:") else ""
        if not rel or ".." in Path(rel).parts:
            raise ValueError(f"artifact URI {artifact_uri!r}: expected {SCHEME}:<relative path>")
        self._artifact_dir = str(store_folder(tracking_uri) / rel)
