"""Endpoints added from their fal OpenAPI documents (table `models`, migration m020).

Invariants:
- The document is kept exactly as it was read (its text and sha256): the registry is rebuilt from
  it in every process, so what a batch was validated against can always be read again.
- Adding an endpoint that is already there is refused (a StoreError saying to refresh it), so a
  second add never replaces a document the team relies on.
- A refreshed document waits beside the adopted one (`pending_*`) until a person adopts it;
  adopting replaces the document and its sha256 in one write.
- A price is either fal's (from its pricing API) or the team's (typed by a person); None means
  unknown, which estimates show as unknown, never as $0.
- Archiving hides an endpoint from new batches; its rows, and the batches that used it, stay.
"""
from __future__ import annotations

from core.errors import StoreError
from core.store._sql import _Base, build
from core.store.boundary import sqlite_boundary
from core.store.inputs import NewModel
from core.values import StoredModel, now


class ModelsMixin(_Base):
    """Rows of `models`."""

    @sqlite_boundary
    def add_model(self, model: NewModel) -> StoredModel:
        with self._write_transaction():
            if self._model_row(model.endpoint_id) is not None:
                raise StoreError(f"{model.endpoint_id} is already added; `python -m core model refresh "
                                 f"{model.endpoint_id}` fetches its current document.")
            self._insert("models", {
                "endpoint_id": model.endpoint_id, "label": model.label, "category": model.category,
                "document": model.document, "sha256": model.sha256, "source": model.source,
                "added_at": now(), "added_by": model.added_by, "fetched_at": model.fetched_at,
                "archived_at": None, "price_usd": model.price_usd, "price_unit": model.price_unit,
                "price_source": model.price_source,
            })
        return self._model(model.endpoint_id)

    @sqlite_boundary
    def has_models(self) -> bool:
        """Whether any endpoint was ever added (one cheap read: most stores have none)."""
        return self.db.execute("SELECT 1 FROM models LIMIT 1").fetchone() is not None

    @sqlite_boundary
    def get_model(self, endpoint_id: str) -> StoredModel | None:
        row = self._model_row(endpoint_id)
        return None if row is None else build(StoredModel, row)

    @sqlite_boundary
    def list_models(self, *, include_archived: bool = False) -> list[StoredModel]:
        """Added endpoints in the order they were added."""
        where = "" if include_archived else " WHERE archived_at IS NULL"
        return [build(StoredModel, r) for r in self._rows(f"SELECT * FROM models{where} ORDER BY added_at, rowid")]

    @sqlite_boundary
    def archive_model(self, endpoint_id: str) -> StoredModel:
        self._model(endpoint_id)
        self._write("UPDATE models SET archived_at = coalesce(archived_at, ?) WHERE endpoint_id = ?",
                    [now(), endpoint_id])
        return self._model(endpoint_id)

    @sqlite_boundary
    def set_model_price(self, endpoint_id: str, *, price_usd: float | None, unit: str | None,
                        source: str | None) -> StoredModel:
        self._model(endpoint_id)
        self._write("UPDATE models SET price_usd = ?, price_unit = ?, price_source = ? WHERE endpoint_id = ?",
                    [price_usd, unit, source, endpoint_id])
        return self._model(endpoint_id)

    @sqlite_boundary
    def stage_model_document(self, endpoint_id: str, *, document: str, sha256: str) -> StoredModel:
        """Keep a refreshed document beside the adopted one, until `adopt_model_document`."""
        self._model(endpoint_id)
        self._write("UPDATE models SET pending_document = ?, pending_sha256 = ?, pending_fetched_at = ? "
                    "WHERE endpoint_id = ?", [document, sha256, now(), endpoint_id])
        return self._model(endpoint_id)

    @sqlite_boundary
    def adopt_model_document(self, endpoint_id: str, *, label: str, category: str) -> StoredModel:
        model = self._model(endpoint_id)
        if model.pending_document is None:
            raise StoreError(f"{endpoint_id} has no refreshed document to adopt; refresh it first.")
        self._write("UPDATE models SET document = pending_document, sha256 = pending_sha256, "
                    "fetched_at = pending_fetched_at, label = ?, category = ?, pending_document = NULL, "
                    "pending_sha256 = NULL, pending_fetched_at = NULL WHERE endpoint_id = ?",
                    [label, category, endpoint_id])
        return self._model(endpoint_id)

    def _model_row(self, endpoint_id: str):
        for row in self._rows("SELECT * FROM models WHERE endpoint_id = ?", [endpoint_id]):
            return row
        return None

    def _model(self, endpoint_id: str) -> StoredModel:
        row = self._model_row(endpoint_id)
        if row is None:
            raise StoreError(f"{endpoint_id} is not an added model; `python -m core model list` lists them.")
        return build(StoredModel, row)
